"""FastAPI dependencies for people: ``Depends(require_user(UserRole.admin, ...))``.

401 (with ``WWW-Authenticate: Bearer``) when there is no token or it is not valid; 403
when the user lacks every one of the roles asked for. The account is read at every
request: a disabled account or a role taken away counts at once, not when the token
expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from central.auth.access import access_of
from central.auth.errors import AccessError
from central.auth.tokens import InvalidToken
from central.auth.users import find_user, user_roles
from central.db.models import UserRole

TOKEN_PATH = "/v1/auth/token"  # noqa: S105 (a path, not a password)

# auto_error=False: we answer the missing token ourselves, in our error format.
bearer_token = OAuth2PasswordBearer(tokenUrl=TOKEN_PATH, auto_error=False)


@dataclass(frozen=True)
class Principal:
    """An authenticated person, as the endpoint sees them."""

    username: str
    roles: frozenset[UserRole]
    token_id: str
    token_expires_at: datetime

    @property
    def actor(self) -> str:
        """How the audit log names this person."""
        return f"user:{self.username}"

    def has(self, *roles: UserRole) -> bool:
        return bool(self.roles.intersection(roles))


def _unauthorized(error: str, detail: str) -> AccessError:
    challenge = 'Bearer error="invalid_token"' if error == "invalid_token" else "Bearer"
    return AccessError(401, error, detail, {"WWW-Authenticate": challenge})


def require_user(*roles: UserRole | str) -> Callable[..., Principal]:
    """A dependency admitting users who hold at least one of ``roles`` (none: any user)."""
    wanted = frozenset(UserRole(r) for r in roles)

    def dependency(request: Request, token: str | None = Depends(bearer_token)) -> Principal:
        if not token:
            raise _unauthorized(
                "not_authenticated",
                f"send an access token (Authorization: Bearer ...); get one from {TOKEN_PATH}",
            )
        access = access_of(request)
        now = access.now()
        try:
            claims = access.tokens.decode(token, now)
        except InvalidToken as exc:
            raise _unauthorized(
                "invalid_token", f"{exc}; get a new token from {TOKEN_PATH}"
            ) from exc
        with access.reading() as session:
            user = find_user(session, claims.username)
            if user is None or user.disabled_at is not None:
                raise _unauthorized(
                    "account_disabled",
                    "this account is disabled or no longer exists: ask an administrator",
                )
            held = user_roles(user)
        if wanted and not held.intersection(wanted):
            need = " or ".join(sorted(r.value for r in wanted))
            raise AccessError(
                403, "forbidden", f"this needs the {need} role; ask an administrator for it"
            )
        principal = Principal(claims.username, held, claims.token_id, claims.expires_at)
        request.state.principal = principal
        return principal

    dependency.__name__ = "require_user_" + "_".join(sorted(r.value for r in wanted) or ["any"])
    return dependency
