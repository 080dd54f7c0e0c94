"""What the access checks need at request time, held once per process on ``app.state``.

The lead's start-up code makes one :class:`Access` after opening the database and sets
``app.state.access`` to it; the dependencies (``require_user``, ``require_station``) and
the routers find it there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central.auth.settings import AuthSettings, signing_secret
from central.auth.throttle import LoginThrottle
from central.auth.tokens import TokenIssuer
from central.auth.users import Passwords, password_hasher


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Access:
    """The engine, the settings, and the station CA certificates that vouch for stations.

    ``station_cas``: the CA certificate(s) station certificates must be issued by
    (several during a CA rollover). ``clock``: the registry's time (tests move it).
    """

    engine: Engine
    settings: AuthSettings
    station_cas: Sequence[x509.Certificate] = ()
    clock: Callable[[], datetime] = utc_now
    tokens: TokenIssuer = field(init=False)
    passwords: Passwords = field(init=False)
    throttle: LoginThrottle = field(init=False)
    last_nonce_prune: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s = self.settings
        self.tokens = TokenIssuer(
            signing_secret(s), timedelta(seconds=s.token_lifetime_s), s.issuer
        )
        self.passwords = Passwords(password_hasher(s))
        self.throttle = LoginThrottle(s.login_max_failures, timedelta(seconds=s.login_lockout_s))

    def now(self) -> datetime:
        return self.clock()

    def reading(self) -> Session:
        """A session for reads only: on SQLite it does not take the write lock, so the
        checks every request makes never queue behind writers."""
        return Session(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    def writing(self) -> Session:
        return Session(self.engine, expire_on_commit=False)


def access_of(request: Request) -> Access:
    access = getattr(request.app.state, "access", None)
    if not isinstance(access, Access):
        raise RuntimeError(
            "app.state.access is not set: create central.auth.Access(engine, settings.auth, "
            "station_cas) at start-up and assign it to app.state.access"
        )
    return access
