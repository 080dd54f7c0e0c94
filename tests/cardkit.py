"""PC/SC test kit: pytest fixtures over :mod:`station.drivers.card.bay` (a private pcscd
with a vpcd reader, and our eMRTD card emulator on it).

One pcscd serves the whole test session (the PC/SC client caches its socket path at the
first call); tests take a slot with :class:`CardBay` and must leave it empty.

Use from a test module::

    from tests import cardkit

    pcscd = cardkit.pcscd
    card_bay = cardkit.card_bay

    def test_something(card_bay: CardBay) -> None:
        card = card_bay.card()          # a blank eMRTD card, not yet in the field
        card.insert()
        encoder = card_bay.encoder()    # a CardEncoder on that reader
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.drivers.card.bay import CardBay, PcscDaemon, pcscd_unavailable, use_pcscd

__all__ = ["CardBay", "PcscDaemon", "card_bay", "pcscd", "shared_pcscd"]

_shared: PcscDaemon | None = None


def shared_pcscd() -> PcscDaemon:
    """The test process's one private pcscd, started on first use, stopped at exit."""
    global _shared  # one per process: the PC/SC client library caches its socket path
    if _shared is None:
        reason = pcscd_unavailable()
        if reason:
            pytest.skip(reason)
        daemon = PcscDaemon(Path(tempfile.mkdtemp(prefix="pcscd-")))
        try:
            daemon.start()
        except RuntimeError as exc:
            pytest.skip(f"private pcscd could not start here: {exc}")
        try:
            use_pcscd(daemon)
        except RuntimeError as exc:
            daemon.stop()
            pytest.skip(str(exc))
        atexit.register(daemon.stop)
        atexit.register(shutil.rmtree, daemon.workdir, True)
        _shared = daemon
    return _shared


@pytest.fixture(scope="session")
def pcscd() -> PcscDaemon:
    return shared_pcscd()


@pytest.fixture
def card_bay(pcscd: PcscDaemon, tmp_path: Path) -> Iterator[CardBay]:
    bay = CardBay(pcscd, tmp_path)
    try:
        yield bay
    finally:
        bay.close()
