"""Why enrollment is paused, as the officer reads it: each reason the station gives
(``station.blockers``: a code and its values) said as a sentence in the officer's
language, on the start screen and on the refusal of a new enrollment, never the generic
"not synced" when the reason is another one nor the API's English."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx

from station.ui import i18n
from station.ui.pages.case import blocker_text
from tests import uikit
from tests.uikit import Kiosk

MB = 1024 * 1024

REASONS: dict[str, dict[str, Any]] = {
    "key_error": {"detail": "the data key does not open the store"},
    "identity_damaged": {"detail": "station.crt: bad PEM"},
    "not_provisioned": {},
    "never_synced": {},
    "stale": {"age_h": 80, "limit_h": 72},
    "disk_full": {"free_bytes": 300 * MB, "needed_bytes": 512 * MB},
}


def _said(code: str) -> str:
    return blocker_text({"code": code, "message": "ENGLISH", "values": REASONS[code]})


def test_every_reason_is_a_sentence_with_its_values() -> None:
    i18n.forget_missing()
    i18n.use("vi")
    try:
        said = {code: _said(code) for code in REASONS}
        assert i18n.missing("vi") == set()
        assert said["stale"] == (
            "Dữ liệu của trạm đã cũ 80 giờ (giới hạn 72 giờ): kết nối mạng hoặc đồng bộ."
        )
        assert "còn trống 300 MB, cần 512 MB" in said["disk_full"]
        assert all("ENGLISH" not in text for text in said.values()), said
        assert len(set(said.values())) == len(said), said  # each reason its own words
        # Only the stale data is about syncing for too long.
        assert [c for c, text in said.items() if "giới hạn" in text] == ["stale"]
        # A reason this kiosk does not know yet keeps the station's own words.
        unknown = {"code": "battery_low", "message": "the battery is low", "values": {}}
        assert blocker_text(unknown) == "the battery is low"
        i18n.use("en")
        assert "80 h old (limit 72 h)" in _said("stale")
        assert "300 MB free, 512 MB needed" in _said("disk_full")
    finally:
        i18n.use("vi")


@contextlib.contextmanager
def _stale(kiosk: Kiosk, hours: int) -> Iterator[None]:
    """The station's clock ``hours`` after its last sync, for the block (no sync round
    runs meanwhile: one would make the data fresh again)."""
    online = kiosk.runtime.online
    assert online is not None
    sync = online.synchronizer
    with sync._round:
        last = sync.staleness().last_sync_at
        assert last is not None
        clock = sync.clock
        sync.clock = lambda: last + timedelta(hours=hours)
        try:
            yield
        finally:
            sync.clock = clock


def test_a_paused_station_says_why(browser: Any, kiosk: Kiosk) -> None:
    i18n.forget_missing()
    page = uikit.new_page(browser, kiosk, "small")
    with _stale(kiosk, 80):
        # The API: codes and values for the kiosk, an English message for scripts.
        with httpx.Client(base_url=kiosk.url, timeout=120) as api:
            uikit.api_login(kiosk, api, kiosk.officer)
            refused = api.post("/api/cases", json={})
            blockers = api.get("/api/status").json()["blockers"]
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] == "enrollment_paused"
        ((code, values, message),) = [(b["code"], b["values"], b["message"]) for b in blockers]
        assert (code, values) == ("stale", {"age_h": 80, "limit_h": 72})
        assert "80 h old" in message
        assert body["details"] == blockers

        sentence = "Dữ liệu của trạm đã cũ 80 giờ (giới hạn 72 giờ): kết nối mạng hoặc đồng bộ."
        uikit.login(page, kiosk)  # (this ends the API client's session)
        page.goto("/")
        assert sentence in page.inner_text("#paused")
        uikit.screenshots(page, "home-paused")

        # A new enrollment is refused with the same reason as its message.
        with page.expect_navigation():
            page.evaluate(
                """() => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = "/cases";
                document.body.appendChild(form);
                form.submit();
            }"""
            )
        said = page.inner_text(".refused .message")
        assert said.strip() == sentence, said  # no English, no other cause
        assert page.locator(".refused a[href='/outbox']").count() == 1
        uikit.screenshots(page, "case-refused-paused")
    page.goto("/")
    assert page.locator("#paused").count() == 0
    page.context.close()
    assert i18n.missing("vi") == set()
