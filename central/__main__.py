"""`python -m central`: the registry's command line.

    serve [--host H] [--port P] [--workers N]   the HTTP service (and, embedded, the worker)
    worker [--once]                             a pipeline worker process
    migrate                                     bring the database schema to the newest
    users add|disable|enable|passwd|roles|list  registry users (people)
    audit verify                                check the audit log's hash chain
    jobs list [--state S] | retry ID... | retry --all-failed
    keys show|rotate-ds|rotate-csca|export-trust
    quotas import FILE [--check]                area quotas from CSV
    residents import FILE --office ID [--replace] [--check]
                                                a commune's pre-loaded resident list (CSV)
    media import FOLDER                         packages a station exported to media
    operators credentials USERNAME [--pin] [--password] [--finger POS=FILE]
    stations token STATION_ID [--registry-url URL [--qr FILE.png]]
                                                a one-time enrollment token (and its QR)

Settings come from REGISTRY_CONFIG (a TOML file) and REGISTRY_* variables; with none the
registry runs embedded under ./data/registry.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from central.auth.cli import add_audit_parser, add_users_parser, run_audit, run_users
from central.config import RegistrySettings
from central.keys_cli import add_keys_parser, run_keys
from central.logs import configure_logging
from central.quotas import add_quotas_parser, run_quotas
from central.station_cli import add_station_parsers, run_station_command

log = logging.getLogger("central")


def _nodelay_on_shared_socket() -> None:
    """With ``--workers`` uvicorn binds one socket for all its processes and leaves Nagle's
    algorithm on for it (encode/uvicorn#3149): every small response then waits ~40 ms for
    the client's delayed ACK. Turn it off on the socket uvicorn binds."""
    import socket

    from uvicorn.config import Config

    bind = Config.bind_socket
    if getattr(bind, "_vn_eid_nodelay", False):
        return

    def bind_socket(self: Config) -> socket.socket:
        sock = bind(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    bind_socket._vn_eid_nodelay = True  # type: ignore[attr-defined]
    Config.bind_socket = bind_socket  # type: ignore[method-assign]


def _serve(args: argparse.Namespace, settings: RegistrySettings) -> int:
    import uvicorn

    host = args.host or settings.host
    port = args.port or settings.port
    if args.workers > 1:
        if settings.worker.in_process:
            print(
                "serve --workers N runs several API processes: run the pipeline as "
                "`python -m central worker` and set worker.in_process = false "
                "(REGISTRY_WORKER__IN_PROCESS=false)",
                file=sys.stderr,
            )
            return 2
        from central.app import LOG_FORMAT_ENV, LOG_LEVEL_ENV

        os.environ[LOG_LEVEL_ENV] = args.log_level
        os.environ[LOG_FORMAT_ENV] = args.log_format
        _nodelay_on_shared_socket()
        uvicorn.run(
            "central.app:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            log_config=None,
            access_log=False,
        )
        return 0
    from central.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    return 0


def _worker(args: argparse.Namespace, settings: RegistrySettings) -> int:
    from central.services import open_registry

    registry = open_registry(settings)
    worker = registry.make_worker()
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # Finish the job in hand, then leave: its commit and the job's completion are one.
        stopping.set()
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if args.once:
            results = worker.drain()
            print(f"{len(results)} jobs run")
        else:
            worker.run()
    finally:
        registry.close()
    return 0


def _jobs(args: argparse.Namespace, settings: RegistrySettings) -> int:
    from datetime import UTC, datetime

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from central.db.engine import engine_from_settings
    from central.db.models import Job, JobState
    from central.db.ops import append_audit, requeue_job

    engine = engine_from_settings(settings.database)
    try:
        if args.jobs_command == "list":
            with Session(engine) as session:
                rows = session.scalars(
                    select(Job).where(Job.state == JobState(args.state)).order_by(Job.id)
                )
                for job in rows:
                    print(
                        f"{job.id}\t{job.kind}\t{job.package_id}\t{job.attempts} attempts\t"
                        f"{(job.last_error or '').splitlines()[0] if job.last_error else ''}"
                    )
            return 0
        now = datetime.now(UTC)
        with Session(engine) as session, session.begin():
            ids = list(args.ids)
            if args.all_failed:
                ids += list(session.scalars(select(Job.id).where(Job.state == JobState.failed)))
            for job_id in ids:
                try:
                    job = requeue_job(session, job_id, now)
                except (LookupError, ValueError) as exc:
                    print(f"job {job_id}: {exc}", file=sys.stderr)
                    return 1
                append_audit(
                    session, now, "cli", "job.retried", f"job:{job_id}", {"kind": job.kind}
                )
            print(f"{len(ids)} jobs queued again")
        return 0
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m central",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=("json", "text"), default="json", help="log lines on stderr"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="address to listen on (default from the settings)")
    serve.add_argument("--port", type=int, help="port to listen on (default from the settings)")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes (PostgreSQL deployments)"
    )
    worker = commands.add_parser("worker", help="run a pipeline worker")
    worker.add_argument("--once", action="store_true", help="run the due jobs, then exit")
    commands.add_parser("migrate", help="bring the database schema to the newest migration")
    jobs = commands.add_parser("jobs", help="the pipeline's work queue")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_commands.add_parser("list", help="jobs in a state (failed by default)")
    listing.add_argument(
        "--state", default="failed", choices=("pending", "running", "failed", "done")
    )
    again = jobs_commands.add_parser("retry", help="queue failed jobs again")
    again.add_argument("ids", nargs="*", type=int)
    again.add_argument("--all-failed", action="store_true")
    add_users_parser(commands)
    add_audit_parser(commands)
    add_keys_parser(commands)
    add_quotas_parser(commands)
    add_station_parsers(commands)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json=args.log_format == "json")
    settings = RegistrySettings()
    if args.command == "migrate":
        from central.db.migrate import current, upgrade

        url = settings.database.url.get_secret_value()
        upgrade(url)
        print(f"database schema at {current(url)}")
        return 0
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "worker":
        return _worker(args, settings)
    if args.command == "jobs":
        return _jobs(args, settings)
    if args.command == "users":
        return run_users(args, settings)
    if args.command == "audit":
        return run_audit(args, settings)
    if args.command == "keys":
        return run_keys(args, settings)
    if args.command == "quotas":
        return run_quotas(args, settings)
    if args.command in ("residents", "media", "operators", "stations"):
        return run_station_command(args, settings)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
