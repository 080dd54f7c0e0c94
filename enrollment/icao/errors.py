"""Errors of the ICAO layer: malformed structures and failed passive authentication."""

from __future__ import annotations


class LdsError(ValueError):
    """Bytes that are not a well-formed LDS structure (TLV, data group, MRZ, EF.SOD)."""


class PassiveAuthError(Exception):
    """Passive authentication failed; the message says which check (and which DG)."""
