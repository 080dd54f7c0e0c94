"""The image's software bill of materials: every Debian package (from the root's dpkg
status) and every Python distribution in the station's environment (from their
``METADATA``), as CycloneDX 1.5 JSON with package URLs. It ships inside the image
(/usr/share/vn-eid/sbom.cdx.json) and beside it."""

from __future__ import annotations

import email.parser
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def dpkg_packages(root: Path) -> list[dict[str, str]]:
    """Installed packages (name, version, architecture) from ``var/lib/dpkg/status``."""
    text = (root / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    packages = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(
                {
                    "name": fields["Package"],
                    "version": fields.get("Version", ""),
                    "architecture": fields.get("Architecture", ""),
                    "source": fields.get("Source", fields["Package"]).split(" ")[0],
                }
            )
    return sorted(packages, key=lambda p: p["name"])


def python_distributions(site_packages: Path) -> list[dict[str, str]]:
    """Installed distributions (name, version, licence) from their dist-info folders."""
    found = []
    for meta in sorted(site_packages.glob("*.dist-info/METADATA")):
        message = email.parser.Parser().parsestr(meta.read_text(errors="replace"))
        found.append(
            {
                "name": str(message.get("Name", "")),
                "version": str(message.get("Version", "")),
                "license": str(message.get("License-Expression") or message.get("License") or ""),
            }
        )
    return sorted(found, key=lambda d: d["name"].lower())


def cyclonedx(
    image_name: str, version: str, root: Path, site_packages: Path, created: datetime
) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    for p in dpkg_packages(root):
        arch = p["architecture"]
        components.append(
            {
                "type": "library" if p["name"].startswith("lib") else "application",
                "name": p["name"],
                "version": p["version"],
                "purl": f"pkg:deb/debian/{p['name']}@{p['version']}?arch={arch}",
                "properties": [{"name": "debian:source", "value": p["source"]}],
            }
        )
    for d in python_distributions(site_packages):
        component: dict[str, Any] = {
            "type": "library",
            "name": d["name"],
            "version": d["version"],
            "purl": f"pkg:pypi/{d['name'].lower()}@{d['version']}",
        }
        if d["license"] and len(d["license"]) < 100:
            component["licenses"] = [{"license": {"name": d["license"]}}]
        components.append(component)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # The same build gives the same serial number (reproducible manifests).
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_name + '/' + version)}",
        "version": 1,
        "metadata": {
            "timestamp": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "component": {"type": "operating-system", "name": image_name, "version": version},
        },
        "components": components,
    }


def write(document: dict[str, Any], *targets: Path) -> None:
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def package_set(document: dict[str, Any]) -> list[str]:
    """``name=version`` of every component: what "the same package set" compares."""
    return sorted(f"{c['purl']}" for c in document["components"])
