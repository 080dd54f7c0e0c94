"""Station updates over the network: the publisher's TUF repository (``python -m
image.release``), served read-only as static files under ``/v1/updates/``.

No credential is asked: every file is signed metadata or a bundle whose length and hash that
metadata pins, and a station checks both before it trusts anything (``station.updates``).
Only ``metadata/`` and ``targets/`` are served, only plain file names (no dot files, no
``..``, no links out of the folder), and only when ``updates.directory`` is set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict

from central.routes.errors import api_error

# One path segment: what image.release writes (N.role.json, <sha256>.<bundle>.raucb).
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_FOLDERS = ("metadata", "targets")


class UpdateSettings(BaseModel):
    """Where the update repository lives on this host (the publisher writes it there, or
    it is synced there)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path | None = None
    """The TUF repository (holding metadata/ and targets/); None: no updates served."""


def repository_file(directory: Path, folder: str, name: str) -> Path | None:
    """The file ``name`` in ``directory``'s ``folder`` (metadata or targets), or None when
    there is no such plain file there (including any way out of the folder)."""
    if folder not in _FOLDERS or not _SEGMENT.match(name):
        return None
    root = directory.resolve()
    candidate = (root / folder / name).resolve()
    # A link inside the folder could still point out of it.
    if not candidate.is_relative_to(root / folder) or not candidate.is_file():
        return None
    return candidate


def updates_router(settings: UpdateSettings) -> APIRouter:
    router = APIRouter(prefix="/v1/updates", tags=["updates"])
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such file, or no updates published here"}
    }

    def find(folder: str, name: str) -> Path:
        if settings.directory is None:
            raise api_error(
                404,
                "updates_not_published",
                "this registry serves no station updates: set updates.directory to the "
                "publisher's repository (python -m image.release)",
            )
        found = repository_file(settings.directory, folder, name)
        if found is None:
            raise api_error(404, "not_found", f"no such update file: {folder}/{name[:200]}")
        return found

    @router.get(
        "/metadata/{name}",
        response_class=Response,
        responses={200: {"content": {"application/json": {}}}, **not_found},
    )
    def update_metadata(name: str) -> Response:
        """TUF metadata of the station update repository (root, targets, snapshot,
        timestamp; signed: stations check it against the root their image ships)."""
        found = find("metadata", name)
        # Read whole (a few KB): the publisher replaces timestamp.json and the plain names
        # while we answer, and the length sent must be that of the bytes sent. Those change
        # with every publish and are never cached; versioned ones (N.role.json) never change.
        cache = "public, max-age=86400" if name[0].isdigit() else "no-cache"
        return Response(
            found.read_bytes(), media_type="application/json", headers={"Cache-Control": cache}
        )

    @router.get(
        "/targets/{name}",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, **not_found},
    )
    def update_bundle(name: str) -> FileResponse:
        """A signed RAUC bundle, named by its sha256 (which the targets metadata pins)."""
        return FileResponse(
            find("targets", name),
            media_type="application/octet-stream",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return router


__all__ = ["UpdateSettings", "repository_file", "updates_router"]
