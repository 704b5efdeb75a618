"""Chemometrics for NIR ore spectra: pure numerics on arrays, no I/O beyond model files, no other orelane part."""
