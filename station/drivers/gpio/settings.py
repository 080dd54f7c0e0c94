"""Configuration of the GPIO section: backend and the pin map (BCM numbers)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Bcm = int


class GpioPins(BaseModel):
    """BCM numbers; the defaults are the wiring in docs/protocols/gpio.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    red: Bcm = Field(17, ge=0, le=27)
    green: Bcm = Field(27, ge=0, le=27)
    blue: Bcm = Field(22, ge=0, le=27)
    buzzer: Bcm = Field(18, ge=0, le=27)
    button: Bcm = Field(23, ge=0, le=27)

    @model_validator(mode="after")
    def _distinct(self) -> GpioPins:
        used = self.as_map()
        if len(set(used.values())) != len(used):
            raise ValueError(f"two devices share a GPIO pin: {used}")
        return self

    def as_map(self) -> dict[str, int]:
        return {"red": self.red, "green": self.green, "blue": self.blue,
                "buzzer": self.buzzer, "button": self.button}  # fmt: skip


class GpioSettings(BaseModel):
    """``rpi``: the header through RPi.GPIO (rpi-lgpio); ``mock``: in-memory pins (desk,
    demo, tests)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["rpi", "mock"] = "mock"
    pins: GpioPins = GpioPins()
    led_active_high: bool = True  # False for a common-anode RGB LED
    buzzer_active_high: bool = True
    button_bounce_s: float = Field(0.02, ge=0.0, le=0.5)
