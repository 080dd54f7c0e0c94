"""Configuration of the card encoder section: the real PC/SC stack, or a simulated bay."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from station.drivers.card.encoder import EncoderSettings


class CardSettings(BaseModel):
    """``pcsc``: the system pcscd and a real encoder (reader chosen by
    ``encoder.reader_pattern``); ``simulated``: the station starts a private pcscd with a
    vpcd reader and our eMRTD emulator as the card (root only; see
    :mod:`station.drivers.card.bay`). The encoder code is the same in both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["pcsc", "simulated"] = "simulated"
    encoder: EncoderSettings = EncoderSettings()
