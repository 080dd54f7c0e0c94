"""Human-readable package summaries for the command line: never any biometric bytes."""

from __future__ import annotations

from collections.abc import Mapping

from enrollment.envelope import EnvelopeHeader
from enrollment.manifest import Manifest
from enrollment.record import EnrollmentRecord
from enrollment.reference import ETHNIC_GROUPS, FINGER_POSITIONS


def header_lines(header: EnvelopeHeader, file_size: int) -> list[str]:
    return [
        f"package      {header.package_id}",
        f"created      {header.created}",
        f"encrypted to {header.recipient_kid.hex()[:16]}… (HPKE P-256/HKDF-SHA256/AES-256-GCM)",
        f"size         {file_size:,} bytes on disk, {header.plaintext_size:,} bytes inside",
    ]


def manifest_lines(manifest: Manifest) -> list[str]:
    lines = [f"station      {manifest.station_id}", "parts:"]
    for p in manifest.parts:
        lines.append(
            f"  {p.name:<18} {p.media_type:<38} {p.encoding:<8} "
            f"{p.size:>9,} B  sha256 {p.sha256.hex()[:16]}…"
        )
    return lines


def record_lines(record: EnrollmentRecord) -> list[str]:
    d, c = record.demographics, record.capture
    residence = d.permanent_residence.areas[0]
    lines = [
        "citizen:",
        f"  name          {d.full_name}",
        f"  born          {d.date_of_birth}   sex {d.sex.value}   nationality {d.nationality}",
        f"  ethnicity     {d.ethnicity} {ETHNIC_GROUPS[d.ethnicity]}   religion {d.religion}",
        f"  residence     {residence.province_code}/{residence.district_code or '-'}/"
        f"{residence.commune_code} ({residence.scheme.value})"
        + (f", {d.permanent_residence.detail}" if d.permanent_residence.detail else ""),
        f"  old ID        {d.old_id_number or '-'}",
        "capture:",
        f"  operator      {c.operator_id}"
        + (f"   supervisor {c.supervisor_id}" if c.supervisor_id else ""),
        f"  time          {c.started_at.isoformat()} .. {c.completed_at.isoformat()}",
        "samples:",
    ]
    for s in record.samples:
        where = FINGER_POSITIONS.get(s.position, "") if s.modality == "finger" else ""
        quality = f"{s.quality.algorithm} {s.quality.score:>3}" if s.quality else "-"
        exc = f"  exception {s.exception.code}" if s.exception else ""
        idc = f"IDC {s.idc:>2}" if s.idc is not None else "no image"
        lines.append(
            f"  {s.modality:<7} {s.position:>2} {where:<13} {idc:<9} {quality:<12} "
            f"attempts {s.attempts}{exc}"
        )
    return lines


def transaction_lines(records: Mapping[str, int], tot: str) -> list[str]:
    counts = ", ".join(f"{n} x {kind}" for kind, n in records.items())
    return [f"ANSI/NIST-ITL TOT {tot}: {counts}"]
