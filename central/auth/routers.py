"""HTTP endpoints of access control: the token endpoint, the users' own and the
administrators' account endpoints, and reading / verifying the audit log.

``install(app)`` adds them and the error handler in one call; ``app.state.access`` must be
set at start-up (``central.auth.access``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from central.auth.access import Access, access_of
from central.auth.audit import verify_audit_log
from central.auth.deps import TOKEN_PATH, Principal, require_user
from central.auth.errors import AccessError, access_error_handler
from central.auth.users import (
    UserError,
    authenticate,
    create_user,
    disable_user,
    list_users,
    set_password,
    user_roles,
)
from central.db.models import AuditEntry, User, UserRole
from central.db.ops import append_audit

admin = UserRole.admin
auditor = UserRole.auditor
MAX_SEQ = 2**63 - 1
"""Audit sequence numbers are 64-bit: a larger one is a 422, not a driver overflow (500)."""


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (RFC 6749 token type)
    expires_in: int
    """Seconds until the token expires (RFC 6749 5.1)."""


class Me(BaseModel):
    username: str
    roles: list[UserRole]
    token_expires_at: datetime


class UserView(BaseModel):
    username: str
    full_name: str
    roles: list[UserRole]
    created_at: datetime
    disabled_at: datetime | None


# Long enough for any passphrase; a megabyte "password" is an attack on memory and logs.
MAX_PASSWORD_LENGTH = 1024


class NewUser(BaseModel):
    username: str = Field(max_length=64)
    full_name: str = Field("", max_length=200)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    roles: list[UserRole] = Field(min_length=1, max_length=len(UserRole))


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Field(max_length=MAX_PASSWORD_LENGTH)


class AuditEntryView(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def _user_view(user: User) -> UserView:
    return UserView(
        username=user.username,
        full_name=user.full_name,
        roles=sorted(user_roles(user)),
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


def _bad_request(exc: UserError) -> AccessError:
    return AccessError(400, "invalid_request", str(exc))


def _login(access: Access, username: str, password: str) -> TokenResponse:
    now = access.now()
    wait = access.throttle.retry_after(username, now)
    if wait is not None:
        seconds = max(1, int(wait.total_seconds()) + 1)
        raise AccessError(
            429,
            "too_many_attempts",
            f"too many failed logins for this username: try again in {seconds} s",
            {"Retry-After": str(seconds)},
        )
    with access.writing() as session, session.begin():
        user = authenticate(session, access.passwords, username, password)
        if user is None:
            access.throttle.failed(username, now)
            raise AccessError(
                401,
                "invalid_grant",
                "wrong username or password, or the account is disabled",
                {"WWW-Authenticate": "Bearer"},
            )
        access.throttle.succeeded(username)
        token, claims = access.tokens.issue(user.username, user_roles(user), now)
        append_audit(
            session,
            now,
            f"user:{user.username}",
            "user.login",
            user.username,
            {"token_id": claims.token_id},
        )
    return TokenResponse(
        access_token=token, expires_in=int((claims.expires_at - claims.issued_at).total_seconds())
    )


def auth_router() -> APIRouter:
    router = APIRouter(tags=["access"])

    @router.post(TOKEN_PATH, response_model=TokenResponse)
    async def token(
        request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
    ) -> TokenResponse:
        """OAuth2 password flow (RFC 6749 4.3): a short-lived bearer token for a person."""
        return await run_in_threadpool(_login, access_of(request), form.username, form.password)

    @router.get("/v1/auth/me", response_model=Me)
    def me(principal: Annotated[Principal, Depends(require_user())]) -> Me:
        """Who the token belongs to, and the roles the account holds now."""
        return Me(
            username=principal.username,
            roles=sorted(principal.roles),
            token_expires_at=principal.token_expires_at,
        )

    @router.post("/v1/auth/password", status_code=204)
    def change_password(
        request: Request,
        change: PasswordChange,
        principal: Annotated[Principal, Depends(require_user())],
    ) -> None:
        """Change one's own password (the current one is asked again)."""
        access = access_of(request)
        with access.writing() as session, session.begin():
            if (
                authenticate(session, access.passwords, principal.username, change.current_password)
                is None
            ):
                raise AccessError(403, "wrong_password", "the current password is not right")
            try:
                set_password(session, access.passwords, principal.username, change.new_password)
            except UserError as exc:
                raise _bad_request(exc) from exc
            append_audit(
                session,
                access.now(),
                principal.actor,
                "user.password_changed",
                principal.username,
            )

    @router.get("/v1/users", response_model=list[UserView])
    def users(
        request: Request, _: Annotated[Principal, Depends(require_user(admin, auditor))]
    ) -> list[UserView]:
        """Every account (administrators manage them; auditors read them)."""
        with access_of(request).reading() as session:
            return [_user_view(u) for u in list_users(session)]

    @router.post("/v1/users", response_model=UserView, status_code=201)
    def add_user(
        request: Request,
        new: NewUser,
        principal: Annotated[Principal, Depends(require_user(admin))],
    ) -> UserView:
        access = access_of(request)
        now = access.now()
        with access.writing() as session, session.begin():
            try:
                user = create_user(
                    session,
                    access.passwords,
                    new.username,
                    new.password,
                    new.roles,
                    now,
                    new.full_name,
                )
            except UserError as exc:
                raise _bad_request(exc) from exc
            append_audit(
                session,
                now,
                principal.actor,
                "user.created",
                user.username,
                {"roles": list(user.roles)},
            )
            return _user_view(user)

    @router.post("/v1/users/{username}/disable", response_model=UserView)
    def disable(
        request: Request,
        username: str,
        principal: Annotated[Principal, Depends(require_user(admin))],
    ) -> UserView:
        """Disable an account; its tokens stop working at their next request."""
        access = access_of(request)
        now = access.now()
        with access.writing() as session, session.begin():
            try:
                user = disable_user(session, username, now)
            except UserError as exc:
                raise AccessError(404, "no_such_user", str(exc)) from exc
            append_audit(session, now, principal.actor, "user.disabled", username)
            return _user_view(user)

    return router


def audit_router() -> APIRouter:
    router = APIRouter(tags=["audit"])

    @router.get("/v1/audit/entries", response_model=list[AuditEntryView])
    def entries(
        request: Request,
        _: Annotated[Principal, Depends(require_user(auditor, admin))],
        after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        subject: str | None = None,
    ) -> list[AuditEntryView]:
        """The audit log in order, from ``after_seq + 1``; page with the last ``seq``."""
        query = select(AuditEntry).where(AuditEntry.seq > after_seq)
        if subject is not None:
            query = query.where(AuditEntry.subject == subject)
        with access_of(request).reading() as session:
            rows = session.execute(query.order_by(AuditEntry.seq).limit(limit)).scalars()
            return [
                AuditEntryView(
                    seq=r.seq,
                    at=r.at,
                    actor=r.actor,
                    action=r.action,
                    subject=r.subject,
                    details=r.details,
                    prev_hash=r.prev_hash,
                    hash=r.hash,
                )
                for r in rows
            ]

    @router.get("/v1/audit/verify")
    def verify(
        request: Request, _: Annotated[Principal, Depends(require_user(auditor, admin))]
    ) -> dict[str, Any]:
        """Re-compute the whole hash chain; the first broken entry, if any."""
        return verify_audit_log(access_of(request).engine).as_dict()

    return router


def install(app: FastAPI) -> None:
    """Add the error format and the access and audit endpoints to ``app``."""
    app.add_exception_handler(AccessError, access_error_handler)
    app.include_router(auth_router())
    app.include_router(audit_router())


__all__ = ["audit_router", "auth_router", "install"]
