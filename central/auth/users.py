"""The registry's people: accounts, Argon2id passwords, and checking a login.

A login with an unknown username costs the same Argon2 work as a wrong password (it is
checked against a dummy hash), so response time does not reveal which usernames exist. A
stored hash made with older parameters is replaced at the next successful login.

None of these functions commits: the caller commits the unit of work (with its audit entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.auth.settings import AuthSettings
from central.db.models import User, UserRole

MIN_PASSWORD_LENGTH = 12
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class UserError(ValueError):
    """A user operation that cannot be done as asked; the message says why."""


def password_hasher(settings: AuthSettings) -> PasswordHasher:
    """Argon2id with the configured cost (argon2-cffi's defaults: RFC 9106's second
    recommendation, 64 MiB, 3 passes, 4 lanes)."""
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )


@dataclass
class Passwords:
    """Hashes and checks passwords; keeps one dummy hash for unknown usernames."""

    hasher: PasswordHasher
    _dummy: str | None = field(default=None, repr=False)

    def hash(self, password: str) -> str:
        check_password_strength(password)
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with ``stored_hash=None`` the same work, False."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = self.hasher.hash("not a password of anyone")
            stored_hash = self._dummy
            password = password + "\x00"  # never matches the dummy, costs the same
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"password too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a passphrase of several words is easiest to remember)"
        )


def check_username(username: str) -> None:
    if not _USERNAME.match(username):
        raise UserError(
            f"username {username!r} is not allowed: 1-64 characters, lower-case letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )


def parse_roles(roles: Iterable[str | UserRole]) -> list[UserRole]:
    """Roles as UserRole values, deduplicated in their defined order."""
    wanted = set()
    for role in roles:
        try:
            wanted.add(UserRole(role))
        except ValueError as exc:
            known = ", ".join(r.value for r in UserRole)
            raise UserError(f"unknown role {role!r}: choose from {known}") from exc
    if not wanted:
        raise UserError("give the user at least one role")
    return [r for r in UserRole if r in wanted]


def find_user(session: Session, username: str) -> User | None:
    return session.execute(select(User).where(User.username == username)).scalar_one_or_none()


def get_user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise UserError(f"no user {username!r}: list them with `python -m central users list`")
    return user


def create_user(
    session: Session,
    passwords: Passwords,
    username: str,
    password: str,
    roles: Iterable[str | UserRole],
    now: datetime,
    full_name: str = "",
) -> User:
    check_username(username)
    role_list = parse_roles(roles)
    if find_user(session, username) is not None:
        raise UserError(f"user {username!r} exists already")
    user = User(
        username=username,
        full_name=full_name or username,
        password_hash=passwords.hash(password),
        roles=[r.value for r in role_list],
        created_at=now,
        disabled_at=None,
    )
    session.add(user)
    session.flush()
    return user


def disable_user(session: Session, username: str, now: datetime) -> User:
    """Disable an account: its tokens stop working at their next request."""
    user = get_user(session, username)
    if user.disabled_at is None:
        user.disabled_at = now
        session.flush()
    return user


def enable_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    user.disabled_at = None
    session.flush()
    return user


def set_password(session: Session, passwords: Passwords, username: str, password: str) -> User:
    user = get_user(session, username)
    user.password_hash = passwords.hash(password)
    session.flush()
    return user


def set_roles(session: Session, username: str, roles: Iterable[str | UserRole]) -> User:
    user = get_user(session, username)
    user.roles = [r.value for r in parse_roles(roles)]
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.username)).scalars())


def user_roles(user: User) -> frozenset[UserRole]:
    """The user's roles; an unknown stored value (a role since removed) grants nothing."""
    known = {r.value for r in UserRole}
    return frozenset(UserRole(r) for r in user.roles if r in known)


def authenticate(
    session: Session, passwords: Passwords, username: str, password: str
) -> User | None:
    """The enabled user whose password this is, else None (same cost either way).

    Rehashes the stored password when the hasher's parameters changed since it was made.
    """
    user = find_user(session, username)
    if not passwords.verify(None if user is None else user.password_hash, password):
        return None
    assert user is not None
    if user.disabled_at is not None:
        return None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hasher.hash(password)
        session.flush()
    return user


def ensure_admin(
    session: Session, passwords: Passwords, username: str, password: str, now: datetime
) -> bool:
    """First start: create ``username`` as admin unless an enabled admin exists already.

    True when it created the account. An existing account of that name is left alone
    (its password is not reset by a restart with a stale bootstrap password).
    """
    for user in list_users(session):
        if user.disabled_at is None and UserRole.admin in user_roles(user):
            return False
    if find_user(session, username) is not None:
        raise UserError(
            f"no enabled admin, and user {username!r} exists: grant it the admin role with "
            f"`python -m central users roles {username} admin` or choose another name"
        )
    create_user(session, passwords, username, password, [UserRole.admin], now, "Administrator")
    return True
