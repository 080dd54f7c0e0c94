"""Network updates through TUF, end to end: a repository written by image.release, served
by the real registry app (uvicorn on loopback, ``/v1/updates/``), read by the station's
client (station.updates, python-tuf's Updater over HTTP).

Each attack test changes the served files the way an attacker (or a broken mirror) would
and asserts the specific refusal; where it helps, a control shows the same files pass when
the one protection under test does not apply (a fresh client, the right key), so the test
fails if that protection were missing.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from central.app import create_app
from image import release
from image.release import Bundle, KeyRing, Lifetimes, ReleaseError, Repository
from station import __main__ as station_cli
from station.config import StationSettings
from station.updates import Outcome, check, unsafe_folder
from tests import processkit, registrykit

NAME_10 = "vn-eid-station-1.0.0.raucb"
NAME_11 = "vn-eid-station-1.1.0.raucb"


@dataclass
class Registry:
    url: str
    served: Path
    """The folder the registry serves under /v1/updates/ (updates.directory)."""


class _Server(threading.Thread):
    def __init__(self, app: object, port: int) -> None:
        import uvicorn

        super().__init__(name="registry-http", daemon=True)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
        )

    def run(self) -> None:
        self.server.run()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry app, as ``python -m central serve`` runs it, on a loopback port."""
    tmp = tmp_path_factory.mktemp("registry")
    served = tmp / "updates"
    served.mkdir()
    settings = registrykit.registry_settings(tmp, updates={"directory": served})
    port = processkit.free_port()
    server = _Server(create_app(settings), port)
    server.start()
    deadline = time.monotonic() + 30
    while not server.server.started:
        assert server.is_alive(), "the registry stopped while starting"
        assert time.monotonic() < deadline, "the registry did not start in 30 s"
        time.sleep(0.05)
    try:
        yield Registry(f"http://127.0.0.1:{port}", served)
    finally:
        server.server.should_exit = True
        server.join(10)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys") / "tuf"
    release.generate_keys(folder)
    return folder


@pytest.fixture
def served(registry: Registry) -> Path:
    """The served folder, emptied for this test."""
    for child in registry.served.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return registry.served


def bundle_file(folder: Path, name: str, size: int = 48_000) -> Path:
    """Bytes standing in for a RAUC bundle (TUF checks length and hash, not content)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def publisher(
    path: Path, keys: Path, *, clock: datetime | None = None, lifetimes: Lifetimes | None = None
) -> Repository:
    return Repository(
        path,
        KeyRing(keys),
        lifetimes=lifetimes,
        clock=(lambda: clock) if clock else release.utc_now,
        say=lambda line: None,
    )


def published(path: Path, keys: Path, *versions: str, clock: datetime | None = None) -> Repository:
    repo = publisher(path, keys, clock=clock)
    repo.init()
    bundles = path.parent / f"{path.name}-bundles"
    repo.publish([Bundle(bundle_file(bundles, f"vn-eid-station-{v}.raucb"), v) for v in versions])
    return repo


def station(
    folder: Path, registry: Registry, running: str, root: bytes | None = None
) -> StationSettings:
    """A station's settings: its own state folder (trusted metadata), the running version,
    and the root shipped in its image (written once: later calls keep the first)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image-version").write_text(running + "\n")
    shipped = folder / "root.json"
    if root is not None and not shipped.exists():
        shipped.write_bytes(root)
    return StationSettings(
        state_dir=folder / "state",
        run_dir=folder / "run",
        registry_url=registry.url,
        image_version_file=folder / "image-version",
        updates={"trusted_root": shipped},  # type: ignore[arg-type]
    )


def refused(outcome: Outcome, code: str) -> str:
    assert outcome.state == "refused", outcome
    assert outcome.reason is not None
    assert outcome.reason.split()[0] == code, outcome.reason
    return outcome.reason


def tuf_file(served: Path, name: str) -> Path:
    return served / "metadata" / name


def hashed_target(served: Path, name: str) -> Path:
    (found,) = (served / "targets").glob(f"*.{name}")
    return found


# --- the station picks the right bundle ----------------------------------------------------


def test_a_station_fetches_the_newest_bundle_newer_than_its_own(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    published(served, keys, "1.0.0", "1.1.0")
    root = release.trusted_root(served)
    sent = hashed_target(served, NAME_11).read_bytes()

    on_10 = station(tmp_path / "on-1.0.0", registry, "1.0.0", root)
    available = check(on_10, download=False)
    assert (available.state, available.version, available.target) == (
        "available", "1.1.0", NAME_11,
    )  # fmt: skip
    fetched = check(on_10, download=True)
    assert (fetched.state, fetched.version) == ("downloaded", "1.1.0")
    assert fetched.path is not None
    assert fetched.path.read_bytes() == sent
    assert fetched.line() == f"VN-EID-NETUPDATE downloaded path={fetched.path} version=1.1.0"
    # Again: found already downloaded and intact.
    assert check(on_10, download=True) == fetched

    older = check(station(tmp_path / "on-0.9", registry, "0.9", root), download=False)
    assert older.version == "1.1.0"  # the newest, not the first newer one
    # Installed (the station now runs 1.1.0): nothing newer, and the download is dropped.
    installed = station(tmp_path / "on-1.0.0", registry, "1.1.0")
    current = check(installed, download=True)
    assert current.state == "none"
    assert current.line() == "VN-EID-NETUPDATE none running=1.1.0"
    assert not fetched.path.exists()


def test_the_command_line_prints_one_line_for_the_installer(
    registry: Registry,
    served: Path,
    keys: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    published(served, keys, "1.1.0")
    settings = station(tmp_path, registry, "1.0.0", release.trusted_root(served))
    monkeypatch.setenv("STATION_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("STATION_RUN_DIR", str(settings.run_dir))
    monkeypatch.setenv("STATION_REGISTRY_URL", registry.url)
    monkeypatch.setenv("STATION_IMAGE_VERSION_FILE", str(settings.image_version_file))
    monkeypatch.setenv("STATION_UPDATES__TRUSTED_ROOT", str(settings.updates.trusted_root))
    assert station_cli.main(["updates", "fetch"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    path = settings.state_dir.parent / "updates/downloads" / NAME_11
    assert line == f"VN-EID-NETUPDATE downloaded path={path} version=1.1.0"
    # Without its trusted root a station trusts nothing: exit 1 and the reason.
    monkeypatch.setenv("STATION_UPDATES__TRUSTED_ROOT", str(tmp_path / "missing.json"))
    assert station_cli.main(["updates", "check"]) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("VN-EID-NETUPDATE refused reason=no-trusted-root ")


def test_root_keeps_its_update_folders_where_the_station_service_cannot_reach(
    tmp_path: Path,
) -> None:
    """The installer runs as root and trusts the metadata and bundle it finds: not in the
    station service's state folder (it owns it, so could swap a folder inside), and never
    in a folder another user can change."""
    settings = StationSettings(state_dir=tmp_path / "station/state", run_dir=tmp_path / "run")
    outcome = check(settings, download=True)  # not provisioned: refused, folders made
    assert outcome.state == "refused"
    assert (tmp_path / "station/updates/metadata").is_dir()
    assert not (tmp_path / "station/state/updates").exists()

    me = os.getuid()
    own = tmp_path / "own/updates"
    own.mkdir(parents=True)
    assert unsafe_folder(own, me) is None
    stranger = tmp_path / "stranger/updates"  # owned by someone else
    stranger.mkdir(parents=True)
    if me == 0:
        os.chown(stranger, 4242, 4242)
        assert unsafe_folder(stranger) == stranger.resolve()
    else:
        assert unsafe_folder(stranger, me + 1) is not None
    shared = tmp_path / "shared"
    (shared / "updates").mkdir(parents=True)
    shared.chmod(0o777)  # anyone may rename updates/ away and make their own
    try:
        assert unsafe_folder(shared / "updates", me) == shared.resolve()
        shared.chmod(0o1777)  # sticky, like /tmp: only updates/'s owner may rename it
        assert unsafe_folder(shared / "updates", me) is None
        (shared / "updates").chmod(0o777)
        assert unsafe_folder(shared / "updates", me) == (shared / "updates").resolve()
        if me == 0:  # as the installer runs: such a folder is refused, nothing fetched
            loose = StationSettings(
                state_dir=tmp_path / "station/state",
                run_dir=tmp_path / "run",
                updates={"metadata_dir": shared / "updates"},  # type: ignore[arg-type]
            )
            refused(check(loose, download=True), "unsafe-folder")
    finally:
        shared.chmod(0o755)


# --- attacks ------------------------------------------------------------------------------


def test_altered_bundle_bytes_are_refused(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    published(served, keys, "1.0.0", "1.1.0")
    settings = station(tmp_path, registry, "1.0.0", release.trusted_root(served))
    stored = hashed_target(served, NAME_11)
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF  # same length, one byte changed
    stored.write_bytes(bytes(data))
    assert check(settings, download=False).state == "available"  # the metadata is fine
    reason = refused(check(settings, download=True), "hash-mismatch")
    assert f"({NAME_11})" in reason
    assert not (settings.state_dir.parent / "updates/downloads" / NAME_11).exists()


def test_older_metadata_after_newer_is_refused(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    """Rollback: the station remembers the newest timestamp it saw, across runs."""
    repo = published(served, keys, "1.0.0")
    root = release.trusted_root(served)
    settings = station(tmp_path / "seen", registry, "0.9", root)
    assert check(settings, download=False).state == "available"
    old_timestamp = tuf_file(served, "timestamp.json").read_bytes()
    repo.publish([Bundle(bundle_file(tmp_path / "b", NAME_11), "1.1.0")])
    assert check(settings, download=False).version == "1.1.0"

    tuf_file(served, "timestamp.json").write_bytes(old_timestamp)  # replayed
    reason = refused(check(settings, download=False), "rollback")
    assert "timestamp version" in reason
    # Control: a station that never saw the newer one takes the old state (1.0.0), so it
    # is the remembered version that refuses above.
    fresh = check(station(tmp_path / "fresh", registry, "0.9", root), download=False)
    assert (fresh.state, fresh.version) == ("available", "1.0.0")


def test_expired_timestamp_is_refused_until_the_publisher_refreshes(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    """Freeze: a mirror that stopped two days ago still serves validly signed metadata."""
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    published(served, keys, "1.0.0", "1.1.0", clock=two_days_ago)
    settings = station(tmp_path, registry, "1.0.0", release.trusted_root(served))
    reason = refused(check(settings, download=True), "expired")
    assert "timestamp.json is expired" in reason
    assert publisher(served, keys).refresh() == [Timestamp.type]
    assert check(settings, download=True).state == "downloaded"


def test_metadata_signed_by_another_key_is_refused(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    published(served, keys, "1.0.0")
    settings = station(tmp_path, registry, "0.9", release.trusted_root(served))
    assert check(settings, download=False).state == "available"
    real = Metadata[Timestamp].from_file(str(tuf_file(served, "timestamp.json")))

    def serve_timestamp_signed_by(signer: CryptoSigner, version: int) -> None:
        forged = Metadata[Timestamp].from_bytes(real.to_bytes())
        forged.signed.version = version
        forged.sign(signer)
        tuf_file(served, "timestamp.json").write_bytes(forged.to_bytes(JSONSerializer()))

    serve_timestamp_signed_by(CryptoSigner.generate_ed25519(), real.signed.version + 1)
    reason = refused(check(settings, download=False), "bad-signature")
    assert "timestamp" in reason
    # Control: the same change signed with the timestamp key root names is taken.
    serve_timestamp_signed_by(KeyRing(keys).signer(Timestamp.type), real.signed.version + 2)
    assert check(settings, download=False).state == "available"


def test_targets_of_another_repository_state_are_refused(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    """Mix and match: a targets.json validly signed with the same keys, at the same version,
    but from another repository (listing a bundle this one never published)."""
    published(served, keys, "1.0.0")
    other = published(tmp_path / "other", keys, "9.9.9")
    theirs = other.metadata / "2.targets.json"
    # The premise: their targets passes this repository's root and has our version.
    ours = Metadata[Targets].from_file(str(tuf_file(served, "2.targets.json")))
    mixed = Metadata[Targets].from_file(str(theirs))
    root = Metadata[Root].from_bytes(release.trusted_root(served)).signed
    root.verify_delegate(Targets.type, mixed.signed_bytes, mixed.signatures)
    assert mixed.signed.version == ours.signed.version
    assert "vn-eid-station-9.9.9.raucb" in mixed.signed.targets

    for name in ("2.targets.json", "targets.json"):
        shutil.copyfile(theirs, tuf_file(served, name))
    settings = station(tmp_path / "station", registry, "1.0.0", release.trusted_root(served))
    reason = refused(check(settings, download=False), "hash-mismatch")
    assert "(metadata)" in reason


def test_a_root_rotation_carries_stations_along(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    repo = published(served, keys, "1.0.0")
    shipped = release.trusted_root(served)
    settings = station(tmp_path / "station", registry, "0.9", shipped)
    assert check(settings, download=False).state == "available"
    old_timestamp_key = KeyRing(keys).signer(Timestamp.type)

    new = tmp_path / "new-keys"
    release.generate_keys(new, [Root.type, Timestamp.type])
    assert repo.rotate(KeyRing(new)) == 2
    repo.publish([Bundle(bundle_file(tmp_path / "b", NAME_11), "1.1.0")])
    # Still the v1 root in the image: v2 is fetched, checked against v1, then trusted.
    assert check(settings, download=False).version == "1.1.0"
    assert (settings.state_dir.parent / "updates/metadata/root_history/2.root.json").is_file()
    fresh = station(tmp_path / "fresh", registry, "0.9", shipped)
    assert check(fresh, download=False).version == "1.1.0"
    # The retired timestamp key no longer signs anything a station accepts.
    stale = Metadata[Timestamp].from_file(str(tuf_file(served, "timestamp.json")))
    stale.signed.version += 1
    stale.sign(old_timestamp_key)
    tuf_file(served, "timestamp.json").write_bytes(stale.to_bytes(JSONSerializer()))
    refused(check(settings, download=False), "bad-signature")


# --- the publisher ------------------------------------------------------------------------


def test_the_publisher_refuses_bad_input_and_writes_nothing(
    served: Path, keys: Path, tmp_path: Path
) -> None:
    repo = published(served, keys, "1.0.0")

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(served)): p.read_bytes() for p in served.rglob("*.*")}

    before = files()
    bundles = tmp_path / "b"
    cases = [
        (Bundle(bundle_file(bundles / "x", NAME_10), "1.0.0"), "already published"),
        (Bundle(bundle_file(bundles, "vn-eid-station-1.0.0-bis.raucb"), "1.0.0"), "already"),
        (Bundle(bundle_file(bundles, NAME_11), "one point one"), "cannot be ordered"),
        (Bundle(bundle_file(bundles, "bad name.raucb"), "1.2.0"), "a bundle's name"),
        (Bundle(bundles / "vn-eid-station-2.0.0.raucb", "2.0.0"), "no such bundle"),
        # Stations take only the newest: an older or equal version would never be installed.
        (Bundle(bundle_file(bundles, "vn-eid-station-0.9.0.raucb"), "0.9.0"), "not newer"),
        (Bundle(bundle_file(bundles, "vn-eid-station-1.0.raucb"), "1.0"), "not newer"),
        # The same name relabelled with another version.
        (Bundle(bundle_file(bundles / "y", NAME_10), "2.0.0"), "published as version 1.0.0"),
    ]
    for bundle, message in cases:
        with pytest.raises(ReleaseError, match=message):
            repo.publish([bundle])
    public_only = tmp_path / "public-only"
    public_only.mkdir()
    for pub in keys.glob("*.pub"):
        shutil.copy(pub, public_only)
    with pytest.raises(ReleaseError, match=r"no targets\.key"):
        publisher(served, public_only).publish([Bundle(bundle_file(bundles, NAME_11), "1.1.0")])
    other_keys = tmp_path / "other-keys"
    release.generate_keys(other_keys)
    with pytest.raises(ReleaseError, match="not the one root names"):
        publisher(served, other_keys).publish([Bundle(bundle_file(bundles, NAME_11), "1.1.0")])
    assert files() == before
    with pytest.raises(ReleaseError, match="no TUF repository"):
        release.trusted_root(tmp_path / "nothing")


def test_a_rotation_to_a_key_that_is_not_here_writes_nothing(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    """A new targets key given only as .pub: root cannot name it while targets.json is
    still signed by the old key (every station would refuse the repository)."""
    repo = published(served, keys, "1.0.0")
    settings = station(tmp_path / "station", registry, "0.9", release.trusted_root(served))
    new = tmp_path / "new-keys"
    release.generate_keys(new, [Targets.type])
    (new / "targets.key").unlink()
    before = {str(p.relative_to(served)): p.read_bytes() for p in served.rglob("*.*")}
    with pytest.raises(ReleaseError, match="new targets key is not here"):
        repo.rotate(KeyRing(new))
    assert {str(p.relative_to(served)): p.read_bytes() for p in served.rglob("*.*")} == before
    assert check(settings, download=False).state == "available"
    # Control: with the new private key present the same rotation goes through.
    release.generate_keys(tmp_path / "with-key", [Targets.type])
    assert repo.rotate(KeyRing(tmp_path / "with-key")) == 2
    assert check(settings, download=False).state == "available"


def test_refresh_renews_snapshot_and_targets_before_they_expire(served: Path, keys: Path) -> None:
    lifetimes = Lifetimes(targets=timedelta(days=8))
    start = datetime.now(UTC) - timedelta(days=5)
    repo = publisher(served, keys, clock=start, lifetimes=lifetimes)
    repo.init()
    # Five days on: snapshot (7 d) and targets (8 d) have less than half their life left.
    later = publisher(served, keys, lifetimes=lifetimes)
    assert later.refresh() == [Targets.type, "snapshot", Timestamp.type]
    assert later.refresh() == [Timestamp.type]
    status = later.status()
    assert status["roles"]["timestamp"]["version"] == 3
    assert not any(role["expired"] for role in status["roles"].values())


def test_the_release_command_line(
    registry: Registry, served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    base = ["--repo", str(served), "--keys", str(keys)]
    assert release.main(["keygen", str(keys)]) == 0
    assert oct((keys / "root.key").stat().st_mode & 0o777) == "0o600"
    assert release.main([*base, "init"]) == 0
    assert release.main([*base, "init"]) == 1  # never over an existing repository
    bundle = bundle_file(tmp_path, NAME_11)
    assert release.main([*base, "publish", str(bundle), "--version", "1.1.0"]) == 0
    assert release.main([*base, "refresh"]) == 0
    assert release.main([*base, "trusted-root", "--out", str(tmp_path / "root.json")]) == 0
    out = capsys.readouterr().out
    assert f"published {NAME_11} version=1.1.0" in out
    assert "hashing" in out  # progress of the long steps
    capsys.readouterr()
    assert release.main([*base, "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["bundles"][NAME_11]["version"] == "1.1.0"
    assert status["roles"]["timestamp"]["version"] == 3
    settings = station(
        tmp_path / "station", registry, "1.0.0", (tmp_path / "root.json").read_bytes()
    )
    assert check(settings, download=False).version == "1.1.0"


# --- the registry's route -----------------------------------------------------------------


def _raw_get(registry: Registry, path: str) -> tuple[int, str, bytes]:
    """A GET with the path sent exactly as written (httpx would normalise dot segments)."""
    host, port = registry.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        connection.close()


def test_the_registry_serves_the_repository_and_nothing_else(
    registry: Registry, served: Path, keys: Path, tmp_path: Path
) -> None:
    published(served, keys, "1.1.0")
    timestamp = httpx.get(f"{registry.url}/v1/updates/metadata/timestamp.json")
    assert timestamp.status_code == 200
    assert timestamp.headers["content-type"] == "application/json"
    assert timestamp.headers["cache-control"] == "no-cache"
    assert timestamp.content == tuf_file(served, "timestamp.json").read_bytes()
    stored = hashed_target(served, NAME_11)
    bundle = httpx.get(f"{registry.url}/v1/updates/targets/{stored.name}")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == "application/octet-stream"
    assert bundle.content == stored.read_bytes()

    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": true}')
    (served / "metadata/link.json").symlink_to(secret)
    (served / "inside.json").write_text("{}")
    (served / "targets/.tmp-partial.raucb").write_bytes(b"half")
    answered_by_the_route = (
        "/v1/updates/metadata/link.json",
        "/v1/updates/metadata/..",
        "/v1/updates/metadata/%2e%2e",
        "/v1/updates/targets/.tmp-partial.raucb",
        "/v1/updates/metadata/nothing.json",
        "/v1/updates/targets/timestamp.json",
    )
    matching_no_route = (
        "/v1/updates/metadata/../../secret.json",
        "/v1/updates/metadata/..%2F..%2Fsecret.json",
        "/v1/updates/inside.json",
        "/v1/updates/.lock",
        "/v1/updates/metadata",
        "/v1/updates/targets/",
        f"/v1/updates/metadata/{secret}",
    )
    for path in answered_by_the_route + matching_no_route:
        status, kind, body = _raw_get(registry, path)
        assert status == 404, (path, status, body)
        assert kind == "application/json"
        assert b"true" not in body, path
        assert b"half" not in body, path
        if path in answered_by_the_route:
            assert json.loads(body)["error"] == "not_found", (path, body)
    post = httpx.post(f"{registry.url}/v1/updates/metadata/timestamp.json")
    assert post.status_code == 405


def test_a_registry_without_an_update_folder_says_so(tmp_path: Path) -> None:
    with TestClient(create_app(registrykit.registry_settings(tmp_path))) as client:
        response = client.get("/v1/updates/metadata/timestamp.json")
    assert response.status_code == 404
    assert response.json()["error"] == "updates_not_published"
    assert "updates.directory" in response.json()["detail"]
