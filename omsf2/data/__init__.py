"""Data: image I/O, preprocessing, synthetic phantoms and datasets."""
