"""Serving on top of :mod:`omsf2.runtime`: the DICOM node and Triton Inference Server (PyTriton).

Nothing is imported here eagerly: pynetdicom, highdicom and PyTriton load only when a server is
built, so ``import omsf2.serve`` stays as light as ``import omsf2``. The DICOM node lives in
``omsf2.serve.dicom_node`` (network and pipeline), ``omsf2.serve.dicom_config`` (its options and
receipt checks), ``omsf2.serve.dicom_spool`` (the on-disk queue that makes it lose nothing) and
``omsf2.serve.dicom_results`` (the SR and SC it sends back); Triton serving in
``omsf2.serve.triton`` (PyTriton) and ``omsf2.serve.triton_python`` (the repository's Python models).
"""
