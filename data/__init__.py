"""Synthetic demo datasets (numpy + PIL only, deterministic from a seed).

No dataset can be downloaded here, so mmedge generates the data its demo models
are trained, evaluated and calibrated on.
"""
