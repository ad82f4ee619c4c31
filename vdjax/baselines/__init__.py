"""Baselines: NAS over depth (DARTS, SMASH), DUN's ensembles, dropout and MFVI, shift."""
