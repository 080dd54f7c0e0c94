"""Fingerprint scanner: ZFM/R30x packet codec, vendor extensions, driver, simulator."""
