"""The PC/SC link: one pcscd context, one reader chosen by name pattern, at most one card
connection, and counters of what crossed it. Wraps pyscard's low-level ``scard`` API so
that every wait has a timeout and every PC/SC failure becomes a :mod:`.errors` type."""

from __future__ import annotations

import re
import time
from typing import Any

from smartcard import scard

from .errors import CardEncoderError, CardRemoved, NoCard, NoReader

_REMOVED = {
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_W_UNRESPONSIVE_CARD,
    scard.SCARD_W_UNPOWERED_CARD,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_E_NOT_TRANSACTED,
    scard.SCARD_F_COMM_ERROR,
    scard.SCARD_E_INVALID_HANDLE,
}
_NO_SERVICE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED}
_POLL_MS = 250  # slice of a long wait, so a reader that vanishes is noticed


def _message(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"


class PcscLink:
    """pcscd, through pyscard. Not thread-safe: one driver thread owns it."""

    def __init__(self, reader_pattern: str) -> None:
        self.pattern = re.compile(reader_pattern)
        self.reader: str | None = None
        self.atr = b""
        self.apdus = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._context: Any = None
        self._card: Any = None
        self._protocol: Any = None

    # --- context and reader -------------------------------------------------------------

    def _ctx(self) -> Any:
        if self._context is None:
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                raise NoReader(
                    f"cannot reach pcscd: {_message(hresult)}; is the pcscd service running?"
                )
            self._context = context
        return self._context

    def _drop_context(self) -> None:
        if self._context is not None:
            scard.SCardReleaseContext(self._context)
            self._context = None

    def readers(self) -> list[str]:
        hresult, names = scard.SCardListReaders(self._ctx(), [])
        if hresult in _NO_SERVICE:
            self._drop_context()
            raise NoReader(f"pcscd went away: {_message(hresult)}; restart the pcscd service")
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            raise NoReader(f"cannot list card readers: {_message(hresult)}")
        return list(names)

    def find_reader(self) -> str:
        names = self.readers()
        for name in names:
            if self.pattern.search(name):
                self.reader = name
                return name
        seen = ", ".join(names) if names else "none"
        raise NoReader(
            f"no card reader matches {self.pattern.pattern!r} (readers seen: {seen}); "
            "check the encoder's USB cable or the reader_pattern setting"
        )

    # --- waiting for cards --------------------------------------------------------------

    def _state(self, reader: str, known: int, timeout_ms: int) -> tuple[int, bytes] | None:
        hresult, states = scard.SCardGetStatusChange(self._ctx(), timeout_ms, [(reader, known)])
        if hresult == scard.SCARD_E_TIMEOUT:
            return None
        if hresult in _NO_SERVICE:
            self._drop_context()
            raise NoReader(f"pcscd went away: {_message(hresult)}")
        if hresult != scard.SCARD_S_SUCCESS:
            raise NoReader(f"reader {reader!r} is not usable: {_message(hresult)}")
        _, event, atr = states[0]
        if event & scard.SCARD_STATE_UNKNOWN or event & scard.SCARD_STATE_UNAVAILABLE:
            raise NoReader(f"reader {reader!r} disappeared; reconnect it")
        return int(event), bytes(atr)

    def card_present(self) -> bool:
        reader = self.reader or self.find_reader()
        state = self._state(reader, scard.SCARD_STATE_UNAWARE, 0)
        return bool(state and state[0] & scard.SCARD_STATE_PRESENT)

    def wait_for(self, present: bool, timeout: float) -> bytes:
        """Wait until a card is (or is no longer) in the field; returns its ATR."""
        reader = self.reader or self.find_reader()
        deadline = time.monotonic() + timeout
        known = scard.SCARD_STATE_UNAWARE
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            state = self._state(reader, known, min(left_ms, _POLL_MS))
            if state is not None:
                event, atr = state
                if bool(event & scard.SCARD_STATE_PRESENT) == present:
                    return atr
                known = event & ~scard.SCARD_STATE_CHANGED
            if time.monotonic() >= deadline:
                if present:
                    raise NoCard(
                        f"no card on {reader!r} within {timeout:g} s; place a blank card "
                        "on the encoder"
                    )
                raise CardEncoderError(
                    f"the card is still on {reader!r} after {timeout:g} s; take it off"
                )

    # --- the card connection ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._card is not None

    def connect(self) -> bytes:
        reader = self.reader or self.find_reader()
        if self._card is not None:
            return self.atr
        hresult, card, protocol = scard.SCardConnect(
            self._ctx(),
            reader,
            scard.SCARD_SHARE_EXCLUSIVE,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        if hresult in (scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_REMOVED_CARD):
            raise NoCard(f"no card on {reader!r}; place a blank card on the encoder")
        if hresult == scard.SCARD_E_SHARING_VIOLATION:
            raise CardEncoderError(f"another program is using {reader!r}; close it")
        if hresult in _REMOVED:
            raise CardRemoved(f"the card on {reader!r} does not answer: {_message(hresult)}")
        if hresult != scard.SCARD_S_SUCCESS:
            raise NoReader(f"cannot connect to {reader!r}: {_message(hresult)}")
        self._card, self._protocol = card, protocol
        hresult, _, _, _, atr = scard.SCardStatus(card)
        self.atr = bytes(atr) if hresult == scard.SCARD_S_SUCCESS else b""
        return self.atr

    def disconnect(self, reset: bool = True) -> None:
        card, self._card = self._card, None
        if card is not None:
            disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
            scard.SCardDisconnect(card, disposition)

    def transmit(self, apdu: bytes) -> bytes:
        if self._card is None:
            raise NoCard("not connected to a card")
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            self.disconnect(reset=False)
            if hresult in _REMOVED:
                raise CardRemoved(
                    f"the card left the encoder mid-operation ({_message(hresult)}); "
                    "put it back and start again"
                )
            if hresult in _NO_SERVICE:
                self._drop_context()
            raise CardRemoved(f"the card link failed: {_message(hresult)}")
        if len(response) < 2:
            # vpcd (and some contactless readers) report a card that left the field
            # mid-command as success with no status word.
            self.disconnect(reset=False)
            raise CardRemoved(
                "the card stopped answering mid-operation (taken off the encoder?); "
                "put it back and start again"
            )
        self.apdus += 1
        self.bytes_sent += len(apdu)
        self.bytes_received += len(response)
        return bytes(response)

    def close(self) -> None:
        self.disconnect()
        self._drop_context()
