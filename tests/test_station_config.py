"""The station's one configuration object: file, environment, and what the docs show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from station.config import StationSettings

DOC = Path(__file__).resolve().parent.parent / "docs" / "station-devices.md"


def _doc_toml() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/station-devices.md lost its example configuration"
    return str(blocks[0])


def test_defaults_are_all_simulated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STATION_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    s = StationSettings()
    assert (s.scanner.backend, s.camera.backend, s.card.backend, s.gpio.backend) == (
        "simulated",
        "simulated",
        "simulated",
        "mock",
    )


def test_the_documented_field_configuration_loads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "station.toml"
    path.write_text(_doc_toml())
    monkeypatch.setenv("STATION_CONFIG", str(path))
    s = StationSettings()
    assert s.station_id == "HN-BD-001"
    assert s.scanner.backend == "serial"
    assert s.scanner.port == "/dev/fingerprint"
    assert s.camera.backend == "opencv"
    assert s.camera.device == "/dev/video0"
    assert s.card.encoder.extended_length
    assert s.card.encoder.write_chunk == 4096
    assert s.gpio.backend == "rpi"
    assert s.gpio.pins.button == 23


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(_doc_toml())
    monkeypatch.setenv("STATION_CONFIG", str(path))
    monkeypatch.setenv("STATION_SCANNER__BACKEND", "simulated")
    monkeypatch.setenv("STATION_GPIO__PINS__BUTTON", "24")
    s = StationSettings()
    assert s.scanner.backend == "simulated"
    assert s.scanner.port == "/dev/fingerprint"  # the rest of the section still from the file
    assert s.gpio.pins.button == 24


def test_mistakes_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "station.toml"
    path.write_text('[scanner]\nbackend = "serial"\nbaud = 115200\n')  # "baudrate"
    monkeypatch.setenv("STATION_CONFIG", str(path))
    with pytest.raises(ValidationError, match="baud"):
        StationSettings()
    path.write_text("[gpio.pins]\nred = 17\ngreen = 17\n")
    with pytest.raises(ValidationError, match="share a GPIO pin"):
        StationSettings()
    monkeypatch.setenv("STATION_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        StationSettings()
