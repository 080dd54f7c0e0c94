"""Synthetic data: fingerprints (SFinGe-style) and a population with planted duplicates."""
