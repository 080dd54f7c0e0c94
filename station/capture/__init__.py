"""Capture workflows: live frames, quality gate, best sample; ten-print; face."""
