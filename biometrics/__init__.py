"""Biometric algorithms both sides use: pure functions over numpy arrays."""
