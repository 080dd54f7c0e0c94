"""Faces: detection, landmarks, ICAO-style quality checks, portrait crop, embeddings."""
