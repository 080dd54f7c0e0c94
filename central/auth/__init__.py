"""Access control of the registry API (docs/registry-access.md).

- ``settings``: ``AuthSettings`` (nested as ``auth`` in the registry's settings).
- ``access``: ``Access``, the per-process state the checks use (``app.state.access``).
- ``deps``: ``require_user(*roles)`` for people's bearer tokens.
- ``stations``: ``require_station()`` for stations' signed requests.
- ``routers``: the token, account and audit endpoints; ``install(app)``.
- ``users`` / ``tokens`` / ``throttle``: accounts, JWTs, the login brake.
- ``audit``: ``verify_audit_log``; ``cli``: ``users ...`` and ``audit verify`` commands.

Nothing is imported here: ``central.config`` imports ``central.auth.settings``, which must
not pull in FastAPI or the database layer.
"""
