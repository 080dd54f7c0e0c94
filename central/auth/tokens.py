"""People's access tokens: short-lived HS256 JWTs (why HS256: ``central.auth.settings``).

Claims: ``sub`` (username), ``roles`` (informational: each request re-reads the account, so
a role taken away or an account disabled takes effect at once), ``iat``, ``exp``, ``jti``
(a random id for the audit log), ``iss``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from central.db.models import UserRole

ALGORITHM = "HS256"


class InvalidToken(ValueError):  # noqa: N818 (a verdict on the token)
    """The bearer token cannot be accepted; ``str()`` says why."""


@dataclass(frozen=True)
class TokenClaims:
    username: str
    roles: frozenset[UserRole]
    issued_at: datetime
    expires_at: datetime
    token_id: str


class TokenIssuer:
    """Issues and checks access tokens with one secret."""

    def __init__(self, secret: bytes, lifetime: timedelta, issuer: str) -> None:
        self._secret = secret
        self.lifetime = lifetime
        self.issuer = issuer

    def issue(
        self, username: str, roles: frozenset[UserRole], now: datetime
    ) -> tuple[str, TokenClaims]:
        # Whole seconds: JWT NumericDate, so the claims we return are the ones we signed.
        now = now.astimezone(UTC).replace(microsecond=0)
        claims = TokenClaims(username, roles, now, now + self.lifetime, secrets.token_urlsafe(16))
        payload = {
            "iss": self.issuer,
            "sub": username,
            "roles": sorted(r.value for r in roles),
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "jti": claims.token_id,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims

    def decode(self, token: str, now: datetime) -> TokenClaims:
        """The claims of a genuine, unexpired token of ours; else :class:`InvalidToken`."""
        try:
            # Expiry is checked below against ``now`` (the registry's clock, injectable).
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "sub", "jti", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"token rejected: {exc}") from exc
        exp, iat = payload["exp"], payload["iat"]
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise InvalidToken("token rejected: exp and iat must be integers")
        expires_at = datetime.fromtimestamp(exp, UTC)
        if now >= expires_at:
            raise InvalidToken("token expired: log in again")
        known = {r.value for r in UserRole}
        roles = payload.get("roles", [])
        return TokenClaims(
            str(payload["sub"]),
            frozenset(UserRole(r) for r in roles if isinstance(r, str) and r in known),
            datetime.fromtimestamp(iat, UTC),
            expires_at,
            str(payload["jti"]),
        )
