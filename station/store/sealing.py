"""The station data key: 32 random bytes (AES-256-GCM) that encrypt drafts at rest.

A draft holds a citizen's face, ten rolled fingerprints and demographics until the package
is built, which may be hours later (a power cut, a recapture). The package itself is
encrypted to the registry; the drafts are encrypted with this key, made at first start
and kept in one of two ways:

- ``tpm``: the key is *sealed* by the station's TPM, as a keyed-hash data object under the
  owner hierarchy's storage primary key (re-derived each time from TCG's ECC P-256 SRK
  template, as :mod:`enrollment.keys.tpm` does). The file holds only the sealed public and
  private areas; the private area is encrypted by the TPM to that primary, so the file is
  useless without this very TPM (or after its owner hierarchy was cleared). A stolen SD
  card therefore does not reveal the drafts. This is what the device image uses.
- ``software``: the key in a 0600 file in the state folder. This protects the drafts only
  by file permissions: anyone who can read the card can read the key. It exists for desk
  machines, the demo and stations without a TPM.

Both write the key file whole or not at all (temp file, fsync, link, fsync the folder) and
never overwrite one: losing the key loses every draft on the disk.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, model_validator
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import TPM2_ALG, TPM2_RC, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMS_KEYEDHASH_PARMS,
    TPMS_SENSITIVE_CREATE,
    TPMT_KEYEDHASH_SCHEME,
    TPMT_PUBLIC,
    TPMU_PUBLIC_PARMS,
)

from enrollment.errors import KeyProviderError

# The TPM helpers are shared on purpose: one lock per TPM for the whole process (the
# station's signer uses the same TPM, and without a resource manager two clients must not
# interleave commands), the same storage primary, the same flush-on-error discipline.
from enrollment.keys.tpm import _connect, _describe, _primary, _tpm_lock, _transient
from station.store.files import fsync_dir

KEY_BYTES = 32
SOFTWARE_MAGIC = b"VN-EID DATA KEY 1\n"
SEALED_MAGIC = b"VN-EID SEALED DATA KEY 1\n"

_SEALED_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA
)


class DataKeyError(RuntimeError):
    """The data key cannot be made or read; the message says what a technician can do."""


class SealedKeyError(DataKeyError):
    """The TPM refused to unseal the data key: the key file belongs to another TPM (a
    moved SD card, a replaced board) or the TPM's owner hierarchy was cleared since."""


class DataKeySettings(BaseModel):
    """Where the data key lives (``STATION_DATA_KEY__BACKEND=tpm``,
    ``STATION_DATA_KEY__TCTI=device:/dev/tpmrm0``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["software", "tpm"] = "software"
    tcti: str | None = None
    """TCTI string for the TPM (``device:/dev/tpmrm0`` on the device,
    ``swtpm:host=127.0.0.1,port=2321`` with swtpm); required for ``tpm``."""

    @model_validator(mode="after")
    def _tcti_for_tpm(self) -> DataKeySettings:
        if self.backend == "tpm" and not self.tcti:
            raise ValueError(
                "data_key.backend = 'tpm' needs data_key.tcti (e.g. device:/dev/tpmrm0)"
            )
        return self

    def file_in(self, state_dir: Path) -> Path:
        """The key file's place in the state folder (one name per backend, so switching
        backends never reads one kind of file as the other)."""
        return state_dir / ("data-key.sealed" if self.backend == "tpm" else "data-key")


class DataKeyProvider(Protocol):
    """Makes the data key once and gives it back on every start."""

    @property
    def path(self) -> Path: ...

    def exists(self) -> bool:
        """Whether the key file is there (a first start makes it)."""
        ...

    def create(self) -> bytes:
        """Make a new key and store it; refuses when a key file exists."""
        ...

    def load(self) -> bytes:
        """The stored key, or :class:`DataKeyError` saying why not."""
        ...

    def load_or_create(self) -> bytes:
        """The stored key, made first if there is none."""
        ...


# --- the key file ---------------------------------------------------------------------------


def _create_exclusively(path: Path, blob: bytes) -> None:
    """Write ``blob`` to a new 0600 file at ``path``, durably; FileExistsError if there is
    one already (two processes racing: the second one loads the first one's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # unlike rename, link never replaces an existing file
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise DataKeyError(f"cannot write the data key file {path}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def _read_private_file(path: Path, magic: bytes, what: str) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise DataKeyError(f"the {what} {path} does not exist") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DataKeyError(
            f"the {what} {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be readable "
            f"by its owner only: chmod 600 {path}"
        )
    blob = path.read_bytes()
    if not blob.startswith(magic):
        raise DataKeyError(f"{path} is not a {what} (wrong header)")
    return blob[len(magic) :]


class _KeyFile:
    """What both providers share: the key file's path, and make-once-then-load."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        return self._path

    def exists(self) -> bool:
        return self._path.exists()

    def create(self) -> bytes:
        raise NotImplementedError

    def load(self) -> bytes:
        raise NotImplementedError

    def load_or_create(self) -> bytes:
        # Two processes racing: the second one's create fails on the link, so it loads.
        if not self.exists():
            try:
                return self.create()
            except DataKeyError as exc:
                if not isinstance(exc.__cause__, FileExistsError):
                    raise
        return self.load()


# --- software -------------------------------------------------------------------------------


class SoftwareDataKey(_KeyFile):
    """The key in a 0600 file. Protects the drafts by file permissions only: whoever reads
    the SD card reads the key. Use the TPM backend on a device."""

    def create(self) -> bytes:
        key = os.urandom(KEY_BYTES)
        try:
            _create_exclusively(self._path, SOFTWARE_MAGIC + key)
        except FileExistsError as exc:
            raise DataKeyError(f"{self._path} exists; refusing to overwrite a data key") from exc
        return key

    def load(self) -> bytes:
        key = _read_private_file(self._path, SOFTWARE_MAGIC, "data key file")
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"the data key file {self._path} is damaged (wrong length)")
        return key


# --- TPM ------------------------------------------------------------------------------------


def _sealed_template() -> Any:
    """A keyed-hash object with no scheme: a sealed data blob, usable only by unsealing,
    bound to this TPM and this parent."""
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.KEYEDHASH,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=_SEALED_ATTRS,
            parameters=TPMU_PUBLIC_PARMS(
                keyedHashDetail=TPMS_KEYEDHASH_PARMS(
                    scheme=TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.NULL)
                )
            ),
        )
    )


class TpmSealedDataKey(_KeyFile):
    """The key sealed by the TPM behind ``tcti``; the file holds the sealed blobs only."""

    def __init__(self, path: Path, tcti: str) -> None:
        super().__init__(path)
        self._tcti = tcti

    def create(self) -> bytes:
        if self._path.exists():
            raise DataKeyError(f"{self._path} exists; refusing to overwrite a sealed data key")
        key = os.urandom(KEY_BYTES)
        sensitive = TPM2B_SENSITIVE_CREATE(
            sensitive=TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(key))
        )
        try:
            with (
                _tpm_lock(self._tcti),
                _connect(self._tcti) as ectx,
                _transient(ectx, _primary(ectx)) as parent,
            ):
                private, public, *_ = ectx.create(parent, sensitive, _sealed_template())
        except KeyProviderError as exc:
            raise DataKeyError(str(exc)) from exc
        except TSS2_Exception as exc:
            raise DataKeyError(f"cannot seal a data key: {_describe(exc)}") from exc
        try:
            _create_exclusively(self._path, SEALED_MAGIC + public.marshal() + private.marshal())
        except FileExistsError as exc:
            raise DataKeyError(f"{self._path} exists; refusing to overwrite a data key") from exc
        return key

    def _blobs(self) -> tuple[Any, Any]:
        blob = _read_private_file(self._path, SEALED_MAGIC, "sealed data key file")
        try:
            public, used = TPM2B_PUBLIC.unmarshal(blob)
            private, used_private = TPM2B_PRIVATE.unmarshal(blob[used:])
        except TSS2_Exception as exc:
            raise DataKeyError(f"the sealed data key file {self._path} is damaged") from exc
        if used + used_private != len(blob) or len(private) == 0:
            raise DataKeyError(f"the sealed data key file {self._path} is damaged (length)")
        area = public.publicArea
        if area.type != TPM2_ALG.KEYEDHASH or (area.objectAttributes & _SEALED_ATTRS) != (
            _SEALED_ATTRS
        ):
            raise DataKeyError(f"{self._path} does not hold a sealed data object")
        return public, private

    def _load_sealed(self, ectx: Any, parent: Any, public: Any, private: Any) -> Any:
        try:
            return ectx.load(parent, private, public)
        except TSS2_Exception as exc:
            if exc.error in (TPM2_RC.INTEGRITY, TPM2_RC.BINDING):
                raise SealedKeyError(
                    f"this TPM cannot unseal the data key {self._path}: the file was sealed "
                    "by another TPM, or this TPM's owner hierarchy was cleared since. The "
                    "drafts on this disk cannot be read with this TPM; put the SD card back "
                    "in its own station, or (if the drafts may be given up) move the key "
                    "file and the drafts aside and start again"
                ) from exc
            raise

    def load(self) -> bytes:
        public, private = self._blobs()
        try:
            with (
                _tpm_lock(self._tcti),
                _connect(self._tcti) as ectx,
                _transient(ectx, _primary(ectx)) as parent,
                _transient(ectx, self._load_sealed(ectx, parent, public, private)) as handle,
            ):
                key = bytes(ectx.unseal(handle))
        except KeyProviderError as exc:
            raise DataKeyError(str(exc)) from exc
        except TSS2_Exception as exc:
            detail = _describe(exc)
            raise DataKeyError(f"cannot unseal the data key {self._path}: {detail}") from exc
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"the sealed data key {self._path} has a wrong length")
        return key


def data_key_provider(
    kind: Literal["software", "tpm"], path: Path, tcti: str | None = None
) -> DataKeyProvider:
    """The provider for ``kind`` keeping its key file at ``path``."""
    if kind == "software":
        return SoftwareDataKey(path)
    if kind == "tpm":
        if not tcti:
            raise DataKeyError("the TPM data key needs a TCTI string (e.g. device:/dev/tpmrm0)")
        return TpmSealedDataKey(path, tcti)
    raise DataKeyError(f"unknown data key backend {kind!r}: use 'software' or 'tpm'")


def provider_for(settings: DataKeySettings, state_dir: Path) -> DataKeyProvider:
    """The provider that ``settings`` name, its file in ``state_dir``."""
    return data_key_provider(settings.backend, settings.file_in(state_dir), settings.tcti)


__all__ = [
    "KEY_BYTES",
    "DataKeyError",
    "DataKeyProvider",
    "DataKeySettings",
    "SealedKeyError",
    "SoftwareDataKey",
    "TpmSealedDataKey",
    "data_key_provider",
    "provider_for",
]
