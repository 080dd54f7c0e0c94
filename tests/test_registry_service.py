"""The registry service shell: configuration, start-up, health and readiness."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from central.app import create_app
from central.config import RegistrySettings
from central.db.migrate import current, downgrade, head


def _embedded(tmp: Path) -> RegistrySettings:
    return RegistrySettings(
        database={"url": f"sqlite:///{tmp / 'registry.db'}"},
        blobs={"backend": "local", "path": tmp / "blobs"},
        keys={"path": tmp / "keys"},
        auth={"jwt_secret_file": tmp / "jwt-secret"},
    )


def test_defaults_are_the_embedded_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REGISTRY_CONFIG", raising=False)
    s = RegistrySettings()
    assert s.database.url.get_secret_value() == "sqlite:///data/registry/registry.db"
    assert s.blobs.backend == "local"
    assert s.blobs.path == Path("data/registry/blobs")
    path = tmp_path / "registry.toml"
    path.write_text('port = 9000\n[database]\nurl = "postgresql+psycopg://reg@db/registry"\n')
    monkeypatch.setenv("REGISTRY_CONFIG", str(path))
    monkeypatch.setenv("REGISTRY_PORT", "9001")  # the environment wins over the file
    s = RegistrySettings()
    assert s.port == 9001
    assert s.database.url.get_secret_value().startswith("postgresql+psycopg://")


def test_start_migrates_and_reports_ready(tmp_path: Path) -> None:
    settings = _embedded(tmp_path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
    assert current(settings.database.url.get_secret_value()) == head()


def test_ready_says_what_is_missing(tmp_path: Path) -> None:
    settings = _embedded(tmp_path)
    url = settings.database.url.get_secret_value()
    with TestClient(create_app(settings)) as client:
        downgrade(url, "0002")  # someone took the schema back under a running API
        behind = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # alive, but not ready
        client.app.state.registry.blobs.root.rename(tmp_path / "gone")  # type: ignore[attr-defined]
        (tmp_path / "blobs").write_text("not a folder")  # the store's volume is not there
        both = client.get("/readyz")
    assert behind.status_code == 503
    assert behind.json()["problems"] == {
        "schema": f"database schema at 0002, code expects {head()}"
    }
    assert both.status_code == 503
    assert set(both.json()["problems"]) == {"schema", "blobs"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_python_m_central_serve_with_no_configuration(tmp_path: Path) -> None:
    """`python -m central serve` in an empty folder: embedded under ./data, answers
    /readyz, and stops cleanly on SIGTERM."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the service did not come up"
                time.sleep(0.2)
        assert ready.status_code == 200, ready.text
        assert (tmp_path / "data" / "registry" / "registry.db").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal (exit status -15)
    assert process.returncode in (0, -signal.SIGTERM)
    assert b"Application shutdown complete" in out


def _cli(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    environ |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "central", "--log-format", "text", *args],
        cwd=tmp,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(240)
def test_jobs_and_worker_from_the_command_line(tmp_path: Path) -> None:
    """A failed job shows in `jobs list`, `jobs retry` queues it again, `worker --once`
    runs what is due and exits; each leaves its audit entry."""
    from datetime import UTC, datetime

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from central.db.engine import make_engine
    from central.db.models import AuditEntry, Job, JobState
    from central.db.ops import enqueue_job

    url = f"sqlite:///{tmp_path / 'data' / 'registry' / 'registry.db'}"
    assert _cli(tmp_path, "migrate").returncode == 0
    engine = make_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        job = enqueue_job(s, "no-such-stage", None, now)
        job.state = JobState.failed
        job.last_error = "RuntimeError: the object store was away"
        job_id = job.id
    listed = _cli(tmp_path, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{job_id}\tno-such-stage" in listed.stdout
    assert "the object store was away" in listed.stdout
    assert _cli(tmp_path, "jobs", "retry", "999").returncode == 1
    retried = _cli(tmp_path, "jobs", "retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr
    assert "1 jobs queued again" in retried.stdout
    ran = _cli(tmp_path, "worker", "--once", env={"REGISTRY_WORKER__RETRY_BASE_SECONDS": "3600"})
    assert ran.returncode == 0, ran.stderr
    assert "1 jobs run" in ran.stdout
    with Session(engine) as s:
        job = s.get_one(Job, job_id)
        assert job.state is JobState.pending  # a kind with no stage: back off, not lost
        assert "no stage" in (job.last_error or "")
        actions = list(s.scalars(select(AuditEntry.action)))
    engine.dispose()
    assert actions.count("job.retried") == 1
