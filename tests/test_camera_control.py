"""The simulated camera's control socket: another person sits down mid-stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from biometrics.synth import faces
from station.drivers.camera.sim_control import CameraControl, CameraControlServer
from station.drivers.camera.simulated import SimulatedCamera
from tests.imagekit import ensure_face_assets


def test_sit_changes_the_person_not_the_camera(tmp_path: Path) -> None:
    assets = ensure_face_assets()
    camera = SimulatedCamera(["good:30"], seed=1, assets=assets, fps=30)
    camera.open()
    server = CameraControlServer(camera, tmp_path / "camera-control").start()
    try:
        control = CameraControl(tmp_path / "camera-control")
        first = camera.read(timeout=5)
        serial = camera.health.snapshot().serial
        assert control.state()["seed"] == 1
        control.sit(6, ["walk_in:1", "good:30"])
        assert control.state()["seed"] == 6
        assert camera.renderer.source.name == faces.source_for(6)
        assert faces.source_for(6) != faces.source_for(1)
        for _ in range(10):  # a frame grabbed before the switch may still be in the buffer
            second = camera.read(timeout=5)
            if second.metadata.get("person") == faces.source_for(6):
                break
        assert second.metadata.get("person") == faces.source_for(6), second.metadata
        assert second.metadata.get("scene") == "walk_in", "the script starts from its beginning"
        assert second.image.shape == first.image.shape
        assert camera.health.snapshot().serial == serial
        with pytest.raises(RuntimeError, match="refused"):
            control.send(cmd="sit", seed="not a number")
        with pytest.raises(RuntimeError, match="unknown command"):
            control.send(cmd="dance")
    finally:
        server.stop()
        camera.close()
    assert not (tmp_path / "camera-control").exists()
