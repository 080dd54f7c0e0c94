"""Configuration of the fingerprint scanner section: which link, and for the simulated
scanner, what it plays."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ScannerSimulatorSettings(BaseModel):
    """What the simulated scanner serves (see docs/protocols/fingerprint.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0)
    person: int = Field(0, ge=0)
    """Which synthetic person's fingers lie on the platen (the default script: 1..10)."""
    transport: Literal["uart", "cdc"] = "cdc"
    pace: bool = True
    """Send at the link's real byte rate (False: as fast as the pty takes, for tests)."""
    fps: float = Field(25.0, gt=0, le=120)


class ScannerSettings(BaseModel):
    """``serial``: a scanner on a serial port (UART or USB CDC-ACM); ``simulated``: the
    station starts the scanner simulator on a pseudo-terminal at ``port`` and talks to it
    through the same driver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["serial", "simulated"] = "simulated"
    port: str = "/dev/ttyACM0"
    """serial: the device (udev rule: /dev/fingerprint); simulated: the link to create."""
    baudrate: int = Field(57600, ge=9600, le=115200, multiple_of=9600)
    password: int = Field(0, ge=0, le=0xFFFFFFFF)
    timeout_s: float = Field(2.0, gt=0, le=30)
    """Longest wait for a reply, or between two packets of a transfer."""
    stream_packet_size: int = Field(4096, ge=32, le=4096)
    pack4: bool = False
    """Stream 4-bit pixels (half the bytes, 16 grey levels) instead of 8-bit."""
    simulator: ScannerSimulatorSettings = ScannerSimulatorSettings()
