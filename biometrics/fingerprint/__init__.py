"""Fingerprints: synthetic generation, quality, minutiae, templates and matching."""
