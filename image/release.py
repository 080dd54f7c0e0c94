"""Signed update metadata (TUF) for stations that fetch updates over the network.

A RAUC bundle is signed, but a signature alone does not stop a network attacker from
serving an older signed bundle (rollback) or hiding a new one forever (freeze). The TUF
repository this module keeps closes both: every bundle is a target listed with its length,
sha256 and version in ``targets`` metadata, pinned by ``snapshot``, which is pinned by a
short-lived ``timestamp``; each role signed by its own ed25519 key, and the ``root`` role
naming those keys. Stations (``station.updates``) trust only the root shipped in their
image and any newer root it (and its successor) signed.

    python -m image.release init                         # new repository (dev keys made)
    python -m image.release publish build/image/X.raucb  # add a bundle, re-sign
    python -m image.release refresh                      # re-sign timestamp (timer, daily+)
    python -m image.release rotate --new-keys DIR        # new root, old + new root keys
    python -m image.release keygen DIR [--role ROLE]     # new ed25519 keys
    python -m image.release status                       # versions, expiries, bundles
    python -m image.release trusted-root --out root.json # the root the image ships

The repository (``--repo``, default build/image/tuf) holds ``metadata/`` and ``targets/``,
served as they are by the registry under ``/v1/updates/``. Consistent snapshots: every
version of root, targets and snapshot stays under its own name and every bundle under its
sha256, so a station reading while a publish writes never sees a mixed state.

Keys (``--keys``): one PEM file per role, ``<role>.key`` (PKCS#8 ed25519) or, for a role
signed elsewhere, ``<role>.pub``. Development keys are made in build/image/keys/tuf on the
first ``init``. In the field the root key stays offline (needed for ``init``, ``rotate``),
the targets key with the release manager (``publish``), and the snapshot and timestamp
keys on the publishing host, where ``refresh`` runs from a timer; see docs/technician.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from packaging.version import InvalidVersion, Version
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = PROJECT / "build/image/tuf"
DEFAULT_KEYS = PROJECT / "build/image/keys/tuf"
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
HASH = "sha256"
# A bundle's name is a URL path segment and a file name on the station: nothing to quote.
BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\.raucb$")
_SERIALIZER = JSONSerializer(compact=False)

T = TypeVar("T", Root, Targets, Snapshot, Timestamp)


class ReleaseError(RuntimeError):
    """A release step cannot go on; the message says what to do. Nothing was half-written."""


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's signature holds. The timestamp is short: a station that cannot
    get a fresh one within a day stops trusting what it sees (a frozen mirror)."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def of(self, role: str) -> timedelta:
        value: timedelta = getattr(self, role)
        return value


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- keys ---------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def generate_keys(folder: Path, roles: Sequence[str] = ROLES) -> list[Path]:
    """A new ed25519 key (``<role>.key``, 0600, and ``<role>.pub``) for each of ``roles``
    that has none in ``folder``; the files made."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    made = []
    for role in roles:
        if role not in ROLES:
            raise ReleaseError(f"no role {role!r}: one of {', '.join(ROLES)}")
        private = folder / f"{role}.key"
        if private.exists():
            continue
        key = Ed25519PrivateKey.generate()
        _write_private(
            private,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (folder / f"{role}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        made.append(private)
    return made


class KeyRing:
    """The role keys in one or more folders, first folder first: ``<role>.key`` signs,
    ``<role>.pub`` only names the key (a role signed on another machine)."""

    def __init__(self, *folders: Path) -> None:
        self.folders = folders

    def can_sign(self, role: str) -> bool:
        return self._find(role, ".key") is not None

    def _find(self, role: str, suffix: str) -> Path | None:
        for folder in self.folders:
            path = folder / f"{role}{suffix}"
            if path.is_file():
                return path
        return None

    def signer(self, role: str) -> CryptoSigner:
        path = self._find(role, ".key")
        if path is None:
            where = ", ".join(str(f) for f in self.folders)
            raise ReleaseError(
                f"no {role}.key in {where}: this step signs {role} metadata; run it where "
                f"that key is, or pass --keys with the folder holding it"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ReleaseError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ReleaseError(f"{path} is not an ed25519 key")
        return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))

    def public(self, role: str) -> SSlibKey | None:
        """The role's public key, from its private or public file; None without either."""
        private = self._find(role, ".key")
        if private is not None:
            return self.signer(role).public_key
        path = self._find(role, ".pub")
        if path is None:
            return None
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as exc:
            raise ReleaseError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ReleaseError(f"{path} is not an ed25519 key")
        return SSlibKey.from_crypto(key)


# --- progress -----------------------------------------------------------------------------


class Steps:
    """One line when a long step starts and one with its time when it ends."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.say(f"{what} ...")
        started = datetime.now(UTC)
        yield
        self.say(f"{what}: {(datetime.now(UTC) - started).total_seconds():.1f} s")


# --- the repository -----------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A bundle to publish: its file and the version stations compare."""

    path: Path
    version: str


def bundle_version(path: Path) -> str:
    """The version in a bundle's manifest (``rauc info``; the signature is checked by the
    station, which runs the same command against its keyring before installing)."""
    if shutil.which("rauc") is None:
        raise ReleaseError(f"{path.name}: rauc is not installed here; give --version")
    result = subprocess.run(
        ["rauc", "info", "--no-verify", "--output-format=shell", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    found = re.search(r"^RAUC_MF_VERSION='(.*)'$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or found is None:
        raise ReleaseError(f"rauc cannot read {path.name}: {result.stderr.strip()[-300:]}")
    return found.group(1)


def check_version(version: str) -> Version:
    """Stations order bundles by this (PEP 440, as ``packaging`` compares it)."""
    try:
        return Version(version)
    except InvalidVersion:
        raise ReleaseError(
            f"version {version!r} cannot be ordered (PEP 440 expected, e.g. 1.2.0 or "
            "0.1.0+20261201.abc123)"
        ) from None


def _version_or_none(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.chmod(tmp.name, 0o644)  # served by the registry, which runs as another user
    os.replace(tmp.name, path)


class Repository:
    """A TUF repository in a folder: ``metadata/`` and ``targets/``. Every change takes the
    folder's lock, writes targets before the metadata naming them and the timestamp last."""

    def __init__(
        self,
        path: Path,
        keys: KeyRing,
        *,
        lifetimes: Lifetimes | None = None,
        clock: Callable[[], datetime] = utc_now,
        say: Callable[[str], None] = print,
    ) -> None:
        self.path = path
        self.metadata = path / "metadata"
        self.targets_dir = path / "targets"
        self.keys = keys
        self.lifetimes = lifetimes or Lifetimes()
        self.clock = clock
        self.steps = Steps(say)
        self.say = say

    # reading

    def exists(self) -> bool:
        return (self.metadata / "timestamp.json").is_file()

    def load(self, role: str, kind: type[T]) -> Metadata[T]:
        path = self.metadata / f"{role}.json"
        try:
            md = Metadata[T].from_file(str(path))
        except FileNotFoundError:
            raise ReleaseError(
                f"no TUF repository in {self.path} (no {path.name}): python -m image.release "
                "init first"
            ) from None
        if not isinstance(md.signed, kind):
            raise ReleaseError(f"{path} holds {md.signed.type} metadata, not {role}")
        return md

    def root(self) -> Metadata[Root]:
        return self.load(Root.type, Root)

    def bundles(self) -> dict[str, TargetFile]:
        return dict(self.load(Targets.type, Targets).signed.targets)

    # writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _expiry(self, role: str) -> datetime:
        return (self.clock() + self.lifetimes.of(role)).replace(microsecond=0)

    def _write(self, md: Metadata[Any], keys: KeyRing) -> bytes:
        """Sign ``md`` with its role's key (checked against root) and write it: versioned
        name for root, targets and snapshot (consistent snapshots), then the plain name."""
        role = md.signed.type
        md.sign(keys.signer(role))
        root = md.signed if isinstance(md.signed, Root) else self.root().signed
        try:
            root.verify_delegate(role, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise ReleaseError(f"the {role} key here is not the one root names: {exc}") from exc
        data = md.to_bytes(_SERIALIZER)
        self.metadata.mkdir(parents=True, exist_ok=True)
        if role != Timestamp.type:
            _atomic_write(self.metadata / f"{md.signed.version}.{role}.json", data)
        _atomic_write(self.metadata / f"{role}.json", data)
        return data

    def _check_signers(self, *roles: str) -> None:
        """Before any file is written: each role's key is here and is the one root names."""
        root = self.root().signed
        for role in roles:
            if self.keys.signer(role).public_key.keyid not in root.roles[role].keyids:
                raise ReleaseError(f"the {role} key here is not the one root names")

    def _bump(self, md: Metadata[Any]) -> None:
        md.signed.version += 1
        md.signed.expires = self._expiry(md.signed.type)

    def _snapshot_and_timestamp(self, targets_data: bytes, targets_version: int) -> None:
        """Pin targets (version, length, hash: a targets.json of another state is refused
        even at the same version) in a new snapshot, and that in a new timestamp."""
        snapshot = self.load(Snapshot.type, Snapshot)
        snapshot.signed.meta["targets.json"] = MetaFile.from_data(
            targets_version, targets_data, [HASH]
        )
        self._bump(snapshot)
        snapshot_data = self._write(snapshot, self.keys)
        self._timestamp(snapshot_data, snapshot.signed.version)

    def _timestamp(self, snapshot_data: bytes, snapshot_version: int) -> None:
        timestamp = self.load(Timestamp.type, Timestamp)
        timestamp.signed.snapshot_meta = MetaFile.from_data(snapshot_version, snapshot_data, [HASH])
        self._bump(timestamp)
        self._write(timestamp, self.keys)

    def init(self) -> None:
        """Root v1 naming a key per role, empty targets, snapshot and timestamp."""
        with self._locked():
            if self.exists() or (self.metadata / "root.json").exists():
                raise ReleaseError(f"{self.path} already holds a TUF repository")
            root = Root(expires=self._expiry(Root.type), consistent_snapshot=True)
            for role in ROLES:
                key = self.keys.public(role)
                if key is None:
                    raise ReleaseError(f"no {role}.key or {role}.pub in the keys folder")
                root.add_key(key, role)
            self._write(Metadata(root), self.keys)
            targets = Metadata(Targets(expires=self._expiry(Targets.type)))
            targets_data = self._write(targets, self.keys)
            snapshot = Metadata(Snapshot(expires=self._expiry(Snapshot.type)))
            snapshot.signed.meta["targets.json"] = MetaFile.from_data(1, targets_data, [HASH])
            snapshot_data = self._write(snapshot, self.keys)
            timestamp = Metadata(Timestamp(expires=self._expiry(Timestamp.type)))
            timestamp.signed.snapshot_meta = MetaFile.from_data(1, snapshot_data, [HASH])
            self._write(timestamp, self.keys)
            self.targets_dir.mkdir(exist_ok=True)
        self.say(f"TUF repository in {self.path}: root v1, no bundles yet")

    def publish(self, bundles: Sequence[Bundle]) -> list[TargetFile]:
        """Add ``bundles`` as targets (file under its sha256, length, hash, version), then
        new targets, snapshot and timestamp versions."""
        for bundle in bundles:
            if not BUNDLE_NAME.match(bundle.path.name):
                raise ReleaseError(
                    f"{bundle.path.name}: a bundle's name is letters, digits, '.', '_', '+', "
                    "'-' and ends in .raucb"
                )
            if not bundle.path.is_file():
                raise ReleaseError(f"{bundle.path}: no such bundle")
            check_version(bundle.version)
        with self._locked():
            self._check_signers(Targets.type, Snapshot.type, Timestamp.type)
            targets = self.load(Targets.type, Targets)
            versions = {
                str(t.custom.get("version")): name
                for name, t in targets.signed.targets.items()
                if isinstance(t.custom, dict)
            }
            added: list[TargetFile] = []
            for bundle in bundles:
                added.append(self._add(targets.signed, bundle, versions))
            with self.steps.step("signing targets, snapshot and timestamp"):
                self._bump(targets)
                data = self._write(targets, self.keys)
                self._snapshot_and_timestamp(data, targets.signed.version)
        return added

    def _add(self, targets: Targets, bundle: Bundle, versions: dict[str, str]) -> TargetFile:
        """Copy the bundle in, hash the copy (what stations get is what was hashed), and
        store it under its hash."""
        name = bundle.path.name
        published_as = next((v for v, n in versions.items() if n == name), None)
        if published_as is not None and published_as != bundle.version:
            raise ReleaseError(f"{name} is already published as version {published_as}")
        if versions.get(bundle.version, name) != name:
            raise ReleaseError(
                f"version {bundle.version} is already published as {versions[bundle.version]}"
            )
        # A station installs only the newest bundle newer than its own: one not newer than
        # what is published already would never be installed anywhere (a same-day rebuild
        # whose commit sorts lower, say). Said here, not found out in the field.
        newest = max((v for v in map(_version_or_none, versions) if v is not None), default=None)
        new = name not in targets.targets
        if new and newest is not None and check_version(bundle.version) <= newest:
            raise ReleaseError(
                f"version {bundle.version} is not newer than {newest}, already published: "
                "stations take only the newest bundle, so none would install this one"
            )
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_dir / f".tmp-{name}"
        try:
            mib = bundle.path.stat().st_size / 2**20
            with self.steps.step(f"copying {name} ({mib:.0f} MiB)"):
                shutil.copyfile(bundle.path, tmp)
            with self.steps.step(f"hashing {name}"):
                target = TargetFile.from_file(name, str(tmp), [HASH])
            target.unrecognized_fields["custom"] = {"version": bundle.version}
            known = targets.targets.get(name)
            if known is not None and known.hashes != target.hashes:
                raise ReleaseError(
                    f"{name} is already published with other content; a new build has a "
                    "new version and so a new name"
                )
            tmp.chmod(0o644)
            os.replace(tmp, self.targets_dir / f"{target.hashes[HASH]}.{name}")
        finally:
            tmp.unlink(missing_ok=True)
        targets.targets[name] = target
        versions[bundle.version] = name
        return target

    def refresh(self) -> list[str]:
        """A new timestamp (always), and a new snapshot or targets when less than half of
        their lifetime is left and their key is here. The roles re-signed."""
        signed: list[str] = []
        with self._locked():
            now = self.clock()
            targets = self.load(Targets.type, Targets)
            snapshot = self.load(Snapshot.type, Snapshot)
            due = {
                role: md.signed.expires - now < self.lifetimes.of(role) / 2
                for role, md in ((Targets.type, targets), (Snapshot.type, snapshot))
            }
            for role in (Targets.type, Snapshot.type):
                if due[role] and not self.keys.can_sign(role):
                    self.say(
                        f"WARNING: {role}.json expires {self._when(role)}; its key is not "
                        f"here: sign it where {role}.key is (python -m image.release refresh)"
                    )
                    due[role] = False
            self._check_signers(
                Timestamp.type,
                *([Snapshot.type] if due[Snapshot.type] or due[Targets.type] else []),
                *([Targets.type] if due[Targets.type] else []),
            )
            if due[Targets.type]:
                self._bump(targets)
                data = self._write(targets, self.keys)
                self._snapshot_and_timestamp(data, targets.signed.version)
                signed += [Targets.type, Snapshot.type, Timestamp.type]
            elif due[Snapshot.type]:
                self._bump(snapshot)
                snapshot_data = self._write(snapshot, self.keys)
                self._timestamp(snapshot_data, snapshot.signed.version)
                signed += [Snapshot.type, Timestamp.type]
            else:
                snapshot_data = (self.metadata / "snapshot.json").read_bytes()
                self._timestamp(snapshot_data, snapshot.signed.version)
                signed.append(Timestamp.type)
        return signed

    def _when(self, role: str) -> str:
        md = Metadata[Any].from_file(str(self.metadata / f"{role}.json"))
        expires: datetime = md.signed.expires
        return expires.strftime("%Y-%m-%d %H:%M UTC")

    def rotate(self, new_keys: KeyRing) -> int:
        """A new root version: each role with a key in ``new_keys`` gets that key instead
        of its old one; signed by the old root key (so stations trust it) and the new one
        (so it holds on its own). Roles whose key changed are re-signed. Without new keys:
        the same keys, a new expiry. The new root version."""
        with self._locked():
            old = self.root()
            new = Metadata[Root].from_bytes(old.to_bytes())
            root = new.signed
            changed = []
            for role in ROLES:
                key = new_keys.public(role)
                if key is None or root.roles[role].keyids == [key.keyid]:
                    continue
                for keyid in list(root.roles[role].keyids):
                    root.revoke_key(keyid, role)
                root.add_key(key, role)
                changed.append(role)
            self._bump(new)
            combined = KeyRing(*new_keys.folders, *self.keys.folders)
            # Before any file is written: every role re-signed below has its new key here.
            # A root naming a key whose metadata is still signed by the old one would make
            # every station refuse the repository until someone re-signed it.
            resign = {
                Targets.type: (Targets.type, Snapshot.type, Timestamp.type),
                Snapshot.type: (Snapshot.type, Timestamp.type),
                Timestamp.type: (Timestamp.type,),
            }
            for role in {r for c in changed for r in resign.get(c, ())}:
                if combined.signer(role).public_key.keyid not in root.roles[role].keyids:
                    raise ReleaseError(
                        f"the new {role} key is not here (only its .pub?): the {role} "
                        f"metadata must be signed with it in the same step; rotate where "
                        f"{role}.key is"
                    )
            new.signatures.clear()
            new.sign(self.keys.signer(Root.type), append=True)
            if Root.type in changed:
                new.sign(new_keys.signer(Root.type), append=True)
            try:
                old.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
                root.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            except UnsignedMetadataError as exc:
                raise ReleaseError(f"the new root does not verify: {exc}") from exc
            data = new.to_bytes(_SERIALIZER)
            _atomic_write(self.metadata / f"{root.version}.root.json", data)
            _atomic_write(self.metadata / "root.json", data)
            self.keys = combined
            if Targets.type in changed:
                targets = self.load(Targets.type, Targets)
                self._bump(targets)
                targets_data = self._write(targets, combined)
                self._snapshot_and_timestamp(targets_data, targets.signed.version)
            elif Snapshot.type in changed:
                snapshot = self.load(Snapshot.type, Snapshot)
                self._bump(snapshot)
                snapshot_data = self._write(snapshot, combined)
                self._timestamp(snapshot_data, snapshot.signed.version)
            elif Timestamp.type in changed:
                snapshot_data = (self.metadata / "snapshot.json").read_bytes()
                self._timestamp(snapshot_data, self.load(Snapshot.type, Snapshot).signed.version)
        self.say(
            f"root v{root.version}: new keys for {', '.join(changed) or 'no role'}; "
            f"expires {root.expires:%Y-%m-%d}"
        )
        return root.version

    def status(self) -> dict[str, Any]:
        roles = {}
        for role in ROLES:
            md = Metadata[Any].from_file(str(self.metadata / f"{role}.json"))
            roles[role] = {
                "version": md.signed.version,
                "expires": md.signed.expires.isoformat(),
                "expired": md.signed.is_expired(self.clock()),
            }
        bundles = {
            name: {"length": t.length, HASH: t.hashes.get(HASH), **(t.custom or {})}
            for name, t in self.bundles().items()
        }
        return {"repository": str(self.path), "roles": roles, "bundles": bundles}


def trusted_root(repository: Path) -> bytes:
    """The root.json the image ships (/etc/vn-eid/tuf/root.json): the repository's newest
    root, checked to be signed by its own root keys and not expired."""
    path = repository / "metadata" / "root.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReleaseError(
            f"no TUF repository in {repository}: python -m image.release init"
        ) from None
    md = Metadata[Root].from_bytes(data)
    if not isinstance(md.signed, Root):
        raise ReleaseError(f"{path} is not root metadata")
    try:
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise ReleaseError(f"{path} is not signed by its own root keys: {exc}") from exc
    if md.signed.is_expired(utc_now()):
        raise ReleaseError(f"{path} expired {md.signed.expires:%Y-%m-%d}: rotate (re-sign) it")
    return data


def development_repository(
    repository: Path = DEFAULT_REPOSITORY, keys: Path = DEFAULT_KEYS
) -> Path:
    """A repository signed with development keys (made when missing), for builds without
    production keys."""
    made = generate_keys(keys)
    if made:
        print(f"development TUF keys made in {keys} (never for stations in the field)")
    repo = Repository(repository, KeyRing(keys))
    if not repo.exists():
        repo.init()
    return repository


# --- command line -------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> None:
    if args.keys is None:
        made = generate_keys(DEFAULT_KEYS)
        if made:
            print(f"development TUF keys made in {DEFAULT_KEYS} (never for stations in the field)")
    _repo(args).init()


def _cmd_publish(args: argparse.Namespace) -> None:
    if args.version and len(args.bundles) != 1:
        raise ReleaseError("--version names the version of one bundle: publish one at a time")
    bundles = [Bundle(path, args.version or bundle_version(path)) for path in args.bundles]
    for target in _repo(args).publish(bundles):
        print(f"published {target.path} version={target.custom['version']} "
              f"{HASH}={target.hashes[HASH]}")  # fmt: skip


def _cmd_refresh(args: argparse.Namespace) -> None:
    repo = _repo(args)
    signed = repo.refresh()
    print(f"re-signed {', '.join(signed)}; timestamp expires {repo._when(Timestamp.type)}")


def _cmd_rotate(args: argparse.Namespace) -> None:
    _repo(args).rotate(KeyRing(args.new_keys) if args.new_keys else KeyRing())


def _cmd_keygen(args: argparse.Namespace) -> None:
    made = generate_keys(args.folder, args.role or ROLES)
    for path in made:
        print(f"made {path} and {path.with_suffix('.pub').name}")
    if not made:
        print(f"{args.folder} already holds those keys; nothing made")


def _cmd_status(args: argparse.Namespace) -> None:
    import json

    print(json.dumps(_repo(args).status(), indent=2))


def _cmd_trusted_root(args: argparse.Namespace) -> None:
    data = trusted_root(args.repo)
    if args.out is None:
        sys.stdout.write(data.decode())
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(args.out, data)
    root = Metadata[Root].from_bytes(data).signed
    print(f"{args.out}: root v{root.version}, expires {root.expires:%Y-%m-%d}")


def _repo(args: argparse.Namespace) -> Repository:
    return Repository(args.repo, KeyRing(args.keys or DEFAULT_KEYS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m image.release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="the repository")
    parser.add_argument(
        "--keys", type=Path, help=f"the role keys (default: development keys in {DEFAULT_KEYS})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="a new repository").set_defaults(run=_cmd_init)
    publish = sub.add_parser("publish", help="add bundles and re-sign")
    publish.add_argument("bundles", type=Path, nargs="+", help=".raucb files")
    publish.add_argument("--version", help="the bundle's version (default: from rauc info)")
    publish.set_defaults(run=_cmd_publish)
    sub.add_parser("refresh", help="a fresh timestamp (from a timer)").set_defaults(
        run=_cmd_refresh
    )
    rotate = sub.add_parser("rotate", help="a new root version (new keys, new expiry)")
    rotate.add_argument("--new-keys", type=Path, help="folder with the roles' new keys")
    rotate.set_defaults(run=_cmd_rotate)
    keygen = sub.add_parser("keygen", help="new ed25519 role keys in a folder")
    keygen.add_argument("folder", type=Path)
    keygen.add_argument("--role", action="append", choices=ROLES, help="only this role")
    keygen.set_defaults(run=_cmd_keygen)
    sub.add_parser("status", help="versions, expiries, bundles").set_defaults(run=_cmd_status)
    root = sub.add_parser("trusted-root", help="the root.json the image ships")
    root.add_argument("--out", type=Path, help="write it here (default: standard output)")
    root.set_defaults(run=_cmd_trusted_root)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Bundle",
    "KeyRing",
    "Lifetimes",
    "ReleaseError",
    "Repository",
    "development_repository",
    "generate_keys",
    "trusted_root",
]
