"""The audit log's hash chain: any change, removal or reordering is found, and where."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from central.audit_chain import GENESIS, ChainBroken, ChainEntry, next_entry, verify_chain

T0 = datetime(2021, 4, 1, 8, 0, tzinfo=UTC)


def _chain(n: int = 6) -> list[ChainEntry]:
    out: list[ChainEntry] = []
    for i in range(n):
        out.append(
            next_entry(
                out[-1] if out else None,
                T0 + timedelta(seconds=i),
                f"station:HN-BD-{i:03d}",
                "package.received",
                f"pkg-{i}",
                {"size": 1000 + i, "sha256": f"{i:064x}"},
            )
        )
    return out


def test_a_chain_verifies_and_links_from_genesis() -> None:
    chain = _chain()
    assert verify_chain(chain) == 6
    assert chain[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    # a verifier holding a published hash can start mid-chain
    assert verify_chain(chain[3:], start_hash=chain[2].hash) == 3


def test_the_hash_covers_every_field() -> None:
    chain = _chain()
    e = chain[2]
    for changed in (
        replace(e, actor="user:mallory"),
        replace(e, action="package.deleted"),
        replace(e, subject="pkg-x"),
        replace(e, details={**e.details, "size": 1}),
        replace(e, at=e.at + timedelta(microseconds=1)),
    ):
        with pytest.raises(ChainBroken) as err:
            verify_chain([*chain[:2], changed, *chain[3:]])
        assert err.value.seq == e.seq
        assert "changed" in err.value.reason


def test_a_removed_or_reordered_entry_is_found() -> None:
    chain = _chain()
    with pytest.raises(ChainBroken, match="entry 4") as err:
        verify_chain([*chain[:3], *chain[4:]])
    assert "missing" in err.value.reason
    with pytest.raises(ChainBroken):
        verify_chain([chain[0], chain[2], chain[1], *chain[3:]])


def test_rewriting_one_entry_and_its_hash_still_breaks_the_next() -> None:
    chain = _chain()
    forged = next_entry(chain[1], chain[2].at, "user:mallory", "case.decided", "case-1")
    with pytest.raises(ChainBroken) as err:
        verify_chain([*chain[:2], forged, *chain[3:]])
    assert err.value.seq == chain[3].seq  # the entry after the rewritten one
    assert "link" in err.value.reason


def test_the_same_moment_in_another_zone_hashes_the_same() -> None:
    a = next_entry(None, T0, "system", "x", "y")
    b = next_entry(None, T0.astimezone(datetime.now().astimezone().tzinfo), "system", "x", "y")
    assert a.hash == b.hash
    with pytest.raises(ValueError, match="timezone-aware"):
        next_entry(None, datetime(2021, 4, 1), "system", "x", "y")
