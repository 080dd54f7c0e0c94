"""PC/SC card encoder for the eMRTD chip, BAC secure messaging, and our card emulator.

Sans-I/O cores (MicroPython subset, crypto injected): :mod:`.apdu`, :mod:`.tlv`,
:mod:`.cardcrypto`, :mod:`.bac`, :mod:`.sm`, :mod:`.applet`, :mod:`.profile`, :mod:`.vpcd`.
Host side: :mod:`.hostcrypto` (``cryptography``), :mod:`.pcsc` (pyscard link),
:mod:`.encoder` (the driver), :mod:`.emulator` (the card behind vpcd + pcscd).
The command set is in docs/protocols/card.md.
"""
