"""``python -m central users ...`` and ``python -m central audit verify``.

The lead wires these in ``central.__main__``::

    add_users_parser(commands); add_audit_parser(commands)
    ...
    if args.command == "users": return run_users(args, settings)
    if args.command == "audit": return run_audit(args, settings)

Passwords are read from the terminal (asked twice) or, for scripts, from standard input
with ``--password-stdin``; never from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.orm import Session

from central.auth.audit import verify_audit_log
from central.auth.settings import AuthSettings
from central.auth.users import (
    Passwords,
    UserError,
    create_user,
    disable_user,
    enable_user,
    list_users,
    password_hasher,
    set_password,
    set_roles,
    user_roles,
)
from central.db.engine import engine_from_settings
from central.db.models import UserRole
from central.db.ops import append_audit

if TYPE_CHECKING:  # central.config will import central.auth.settings: no import cycle
    from central.config import RegistrySettings

ROLE_NAMES = [r.value for r in UserRole]


def add_users_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``users add | disable | enable | passwd | roles | list``."""
    users = subparsers.add_parser("users", help="manage the registry's user accounts")
    actions = users.add_subparsers(dest="users_command", required=True)
    add = actions.add_parser("add", help="create an account")
    add.add_argument("username")
    add.add_argument(
        "--role",
        action="append",
        required=True,
        choices=ROLE_NAMES,
        help="a role to grant (repeat for several)",
    )
    add.add_argument("--full-name", default="")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line)",
    )
    for name, text in (
        ("disable", "disable an account (its tokens stop working)"),
        ("enable", "enable a disabled account"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("username")
    passwd = actions.add_parser("passwd", help="set an account's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    roles = actions.add_parser("roles", help="replace an account's roles")
    roles.add_argument("username")
    roles.add_argument("role", nargs="+", choices=ROLE_NAMES)
    listing = actions.add_parser("list", help="list accounts")
    listing.add_argument("--json", action="store_true")
    return users


def add_audit_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``audit verify``."""
    audit = subparsers.add_parser("audit", help="the hash-chained audit log")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    verify = actions.add_parser("verify", help="re-compute the chain; name the first broken entry")
    verify.add_argument(
        "--after-seq",
        type=int,
        default=0,
        help="start after this entry (give its hash with --start-hash)",
    )
    verify.add_argument("--start-hash", default=None)
    verify.add_argument("--json", action="store_true")
    return audit


def _auth_settings(settings: RegistrySettings) -> AuthSettings:
    # Until RegistrySettings nests AuthSettings as ``auth``, the defaults apply.
    auth = getattr(settings, "auth", None)
    return auth if isinstance(auth, AuthSettings) else AuthSettings()


def _read_password(from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        return stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise UserError("the two passwords differ; nothing was changed")
    return first


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run_users(
    args: argparse.Namespace,
    settings: RegistrySettings,
    *,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    """Run a ``users`` command; 0 on success, 1 with the reason on standard error."""
    engine = engine_from_settings(settings.database)
    passwords = Passwords(password_hasher(_auth_settings(settings)))
    now = datetime.now(UTC)
    command = args.users_command
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            if command == "list":
                users = list_users(session)
                rows: list[dict[str, Any]] = [
                    {
                        "username": u.username,
                        "full_name": u.full_name,
                        "roles": sorted(r.value for r in user_roles(u)),
                        "disabled": u.disabled_at is not None,
                    }
                    for u in users
                ]
                if args.json:
                    json.dump(rows, stdout, indent=2)
                    stdout.write("\n")
                for row in [] if args.json else rows:
                    state = "disabled" if row["disabled"] else "enabled"
                    stdout.write(f"{row['username']:<24} {state:<9} {','.join(row['roles'])}\n")
                return 0
            if command == "add":
                password = _read_password(args.password_stdin, stdin)
                user = create_user(
                    session, passwords, args.username, password, args.role, now, args.full_name
                )
                details: dict[str, Any] = {"roles": list(user.roles)}
                action = "user.created"
            elif command == "disable":
                disable_user(session, args.username, now)
                details, action = {}, "user.disabled"
            elif command == "enable":
                enable_user(session, args.username)
                details, action = {}, "user.enabled"
            elif command == "passwd":
                password = _read_password(args.password_stdin, stdin)
                set_password(session, passwords, args.username, password)
                details, action = {}, "user.password_changed"
            elif command == "roles":
                user = set_roles(session, args.username, args.role)
                details, action = {"roles": list(user.roles)}, "user.roles_changed"
            else:
                raise UserError(f"unknown users command {command!r}")
            append_audit(session, now, _actor(), action, args.username, details)
        stdout.write(f"{action.split('.', 1)[1].replace('_', ' ')}: {args.username}\n")
        return 0
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        engine.dispose()


def run_audit(
    args: argparse.Namespace, settings: RegistrySettings, *, stdout: TextIO = sys.stdout
) -> int:
    """``audit verify``: 0 when the chain is intact, 1 at the first broken entry."""
    engine = engine_from_settings(settings.database)
    try:
        kwargs: dict[str, Any] = {"after_seq": args.after_seq}
        if args.start_hash is not None:
            kwargs["start_hash"] = args.start_hash
        verdict = verify_audit_log(engine, **kwargs)
    finally:
        engine.dispose()
    if args.json:
        json.dump(verdict.as_dict(), stdout, indent=2)
        stdout.write("\n")
    elif verdict.intact:
        stdout.write(
            f"audit log intact: {verdict.entries_checked} entries checked; "
            f"head {verdict.head_seq} {verdict.head_hash}\n"
        )
    else:
        stdout.write(
            f"audit log BROKEN at entry {verdict.broken_at}: {verdict.reason}; "
            f"{verdict.entries_checked} entries before it verified "
            f"(last good: {verdict.head_seq} {verdict.head_hash})\n"
        )
    return 0 if verdict.intact else 1
