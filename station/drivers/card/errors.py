# ruff: noqa: N818 -- short names that read as conditions (NoCard, CardLocked), as the UI uses them
"""What can go wrong at the card encoder, each with a stable ``code`` for the UI and logs,
and a message that says what to do."""

from __future__ import annotations


class CardEncoderError(Exception):
    """Base class. ``code`` is stable across releases; ``sw`` is the card's status word
    when the card said no."""

    code = "card_error"

    def __init__(self, message: str, *, sw: int | None = None) -> None:
        super().__init__(message)
        self.sw = sw


class NoReader(CardEncoderError):
    code = "no_reader"


class NoCard(CardEncoderError):
    code = "no_card"


class CardRemoved(CardEncoderError):
    code = "card_removed"


class WrongCardType(CardEncoderError):
    code = "wrong_card_type"


class CardLocked(CardEncoderError):
    code = "card_locked"


class AccessDenied(CardEncoderError):
    code = "access_denied"


class BacFailed(AccessDenied):
    code = "bac_failed"


class PaceFailed(AccessDenied):
    code = "pace_failed"


class WriteFailed(CardEncoderError):
    code = "write_failed"


class VerificationFailed(CardEncoderError):
    code = "verification_failed"


class CardProtocolError(CardEncoderError):
    """The card answered something this profile does not expect (or broke secure messaging)."""

    code = "protocol_error"
