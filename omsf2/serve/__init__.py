"""Serving on top of the runtime: Triton Inference Server (PyTriton) and the DICOM node."""
