"""The kiosk's frame and login in a real browser: ID + PIN, then a finger on the scanner;
the header shows who is logged in and whether the station is online; the language switch."""

from __future__ import annotations

from typing import Any

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
    kiosk.scanner.present(finger=2, person=kiosk.officer[2])
    page.click("button[type=submit]")
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
