"""The kiosk's frame and login in a real browser: ID + PIN, then a finger on the scanner;
the header shows who is logged in and whether the station is online; the language switch."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from station.ui import i18n
from tests import uikit
from tests.uikit import Kiosk


@pytest.mark.parametrize("size", ["small", "large"])
def test_login_with_pin_and_finger(browser: Any, kiosk: Kiosk, size: str) -> None:
    page = uikit.new_page(browser, kiosk, size)
    page.goto("/")
    assert "/login" in page.url
    uikit.screenshot(page, "login")
    assert uikit.serious_violations(page) == []
    page.fill("#operator_id", kiosk.officer[0])
    page.fill("#secret", kiosk.officer[3])
    # Step two, the finger: it comes a few seconds after the scanner starts waiting for
    # it (the page says it waits meanwhile).
    kiosk.scanner.present(finger=2, person=kiosk.officer[2], fault="no_finger", ms=6_000)
    kiosk.scanner.present(finger=2, person=kiosk.officer[2])
    page.click("button[type=submit]")
    page.wait_for_selector("#waiting.htmx-request")
    uikit.screenshot(page, "login-finger")
    assert uikit.serious_violations(page) == []
    page.wait_for_selector(".bar-officer")
    assert kiosk.officer[1] in page.inner_text(".bar-officer")
    uikit.screenshot(page, "start")
    assert uikit.serious_violations(page) == []
    page.context.close()


def test_a_wrong_pin_says_what_to_do(browser: Any, kiosk: Kiosk) -> None:
    page = uikit.new_page(browser, kiosk)
    page.goto("/login")
    page.fill("#operator_id", kiosk.officer[0])
    page.fill("#secret", "000000")
    page.click("button[type=submit]")
    page.wait_for_selector("#flash .message-error")
    assert "Kiểm tra mã cán bộ và mã PIN" in page.inner_text("#flash")
    page.context.close()


def test_language_switch_and_no_untranslated_string(browser: Any, kiosk: Kiosk) -> None:
    i18n.forget_missing()
    page = uikit.new_page(browser, kiosk)
    uikit.login(page, kiosk)
    assert page.locator("html").get_attribute("lang") == "vi"
    page.click("a[hreflang=en]")
    page.wait_for_selector("html[lang=en]")
    assert "Log out" in page.inner_text("header")
    page.click("a[hreflang=vi]")
    page.wait_for_selector("html[lang=vi]")
    assert "Đăng xuất" in page.inner_text("header")
    assert i18n.missing("vi") == set()
    page.context.close()


@pytest.mark.parametrize("size", ["small", "large"])
def test_the_header_says_offline(browser: Any, kiosk: Kiosk, size: str) -> None:
    """The registry out of reach: the header says "Offline" in words (on the 7-inch screen
    too), without a reload; back online, the green dot again."""
    page = uikit.new_page(browser, kiosk, size)
    uikit.login(page, kiosk)
    page.wait_for_selector("#link.is-online")
    process = kiosk.central.process
    try:
        process.kill()
        # The station notices at its next sync (or heartbeat): here, a sync asked for now.
        assert httpx.post(f"{kiosk.url}/api/sync", timeout=60).status_code >= 400
        # The header's indicator polls every 5 s: it turns by itself.
        page.wait_for_selector("#link.is-offline", timeout=15_000)
        link = page.locator("#link")
        assert link.is_visible()
        assert "Mất kết nối" in link.inner_text()
        box = link.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= uikit.SIZES[size][0]
        uikit.screenshot(page, "home-offline")
        assert uikit.serious_violations(page) == []
    finally:
        kiosk.central.restart()
        assert httpx.post(f"{kiosk.url}/api/sync", timeout=60).status_code == 200
    page.wait_for_selector("#link.is-online", timeout=15_000)
    assert "Mất kết nối" not in page.inner_text("#link")
    page.context.close()
