"""`python -m central serve | migrate`: the registry's command line."""

from __future__ import annotations

import argparse
import sys

from central.config import RegistrySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m central", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="address to listen on (default from the settings)")
    serve.add_argument("--port", type=int, help="port to listen on (default from the settings)")
    commands.add_parser("migrate", help="bring the database schema to the newest migration")
    args = parser.parse_args(argv)
    settings = RegistrySettings()
    if args.command == "migrate":
        from central.db.migrate import current, upgrade

        url = settings.database.url.get_secret_value()
        upgrade(url)
        print(f"database schema at {current(url)}")
        return 0
    import uvicorn

    from central.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
