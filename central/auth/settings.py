"""The ``auth`` section of the registry's settings, and the token signing secret.

Tokens are HS256 JWTs: the registry is both their only issuer and their only verifier, so
a shared secret is enough, and it avoids a key pair and its rotation. (ES256 would only pay
off if other services had to check tokens without being able to mint them.) Every API
process must hold the same secret: set ``jwt_secret`` through the environment when there
are several; the embedded default keeps a generated one in a 0600 file so that tokens
survive a restart.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash


class AuthSettings(BaseModel):
    """People's tokens, the login throttle, and the window of station signatures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_lifetime_s: int = Field(900, ge=60, le=24 * 3600)
    """Access tokens are short-lived: a stolen one is good for minutes, not days."""
    jwt_secret: SecretStr | None = None
    """HS256 secret (at least 32 bytes). None: generated once into ``jwt_secret_file``."""
    jwt_secret_file: Path = Path("data/registry/jwt-secret")
    issuer: str = "vn-eid-registry"
    login_max_failures: int = Field(5, ge=1)
    """Failed logins of one username within ``login_lockout_s`` before it is throttled."""
    login_lockout_s: int = Field(300, ge=1)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    signature_max_age_s: int = Field(300, ge=1)
    """How old a station's signature (``created``) may be when it arrives."""
    clock_skew_s: int = Field(30, ge=0)
    """How far ahead of the registry's clock a station's clock may be."""
    public_origin: str | None = None
    """``https://registry.example.vn`` when a proxy in front changes scheme or host: the
    origin stations put in the signed ``@target-uri``. None: the request's own URL."""
    max_signed_body_bytes: int = Field(1024 * 1024, ge=1)
    """Largest body a station may send to an endpoint that checks the body in the
    dependency (``require_station(verify_body=True)``)."""


def signing_secret(settings: AuthSettings) -> bytes:
    """The HS256 secret: from the settings, else from (or newly into) the secret file."""
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"auth.jwt_secret must be at least {MIN_SECRET_BYTES} bytes; generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return secret
    return _secret_file(settings.jwt_secret_file)


def _secret_file(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        secret = b""
    if secret:
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} is readable by others: chmod 600 {path}")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        os.write(fd, secret + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() refuses to replace: of two processes starting at once, one secret wins
        # and both use it.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes().strip()
