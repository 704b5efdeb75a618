"""The lab desk in a real browser: Debian's headless Chromium driven by Playwright for Python.

Covers what people do at the desk: sign in, scan a cup (the scanner types the code and Enter into the
focused field), enter a result with a photo, open the lot view, print a label that scans, and export CSV.
Chromium comes from the Debian package (never `playwright install`); if it or Playwright is missing the
tests fail under CI=true and are skipped elsewhere.
"""

from __future__ import annotations

import csv
import io
import os

import cv2
import numpy as np
import pytest

from sampling_robot.registry import make_barcode
from tests.sampling_robot.labdesk_fixtures import (PASSWORD, desk_clock, desk_registry, desk_server,  # noqa: F401
                                                   desk_users, png_bytes, require_test_tool, users_template, zxing)

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000


def _playwright():
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"Chromium is not at {CHROMIUM}: apt-get install chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        problems.append("Playwright for Python is not installed: pip install playwright (the browser comes from "
                        "Debian; do not run `playwright install`)")
    require_test_tool("; ".join(problems) or None)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, timeout=30_000)
        yield chromium
        chromium.close()


@pytest.fixture
def desk_page(browser, desk_server):
    """A fresh browser context on the desk; fails the test on a script or CSP error or a missing stylesheet,
    script or image. (Pages answered 4xx on purpose, such as a refused scan, are documents and do not count.)"""
    context = browser.new_context(base_url=desk_server.url, accept_downloads=True, device_scale_factor=4)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []

    def on_console(msg) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource: the server responded"):
            errors.append(msg.text)

    def on_response(response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            errors.append(f"{response.status} for {response.request.resource_type} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"browser console errors: {errors}"


def sign_in(page, username: str, url: str) -> None:
    page.goto("/")
    assert page.url.startswith(url + "/login?next=")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(url + "/")


def focused_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def test_lab_signs_in_scans_a_cup_enters_its_result_and_sees_the_lot(desk_page, desk_server, desk_registry):
    from playwright.sync_api import expect
    page = desk_page
    sign_in(page, "ana", desk_server.url)
    expect(page.locator("#who")).to_have_text("ana (lab)")
    expect(page.locator('#queue tr[data-sample="1"]')).to_have_count(1)

    # The scanner is a keyboard: it types into whatever has focus, so the barcode field must have it.
    assert focused_id(page) == "barcode"
    page.keyboard.type(make_barcode("L1", 1))
    page.keyboard.press("Enter")
    expect(page.locator("#flash")).to_have_text(
        "Received OL-L1-00000001-Z: sample 1, lot LOT-7 (MV Ore Star) (collected and received)")
    expect(page.locator('#queue tr[data-sample="1"]')).to_have_count(0)
    expect(page.locator('#awaiting-result tr[data-sample="1"]')).to_have_count(1)
    assert focused_id(page) == "barcode"  # ready for the next cup without a click

    page.keyboard.type(make_barcode("L1", 4242))
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_contain_text("unknown barcode OL-L1-00004242-")
    assert focused_id(page) == "barcode"
    page.keyboard.type(make_barcode("L1", 1))  # the same cup again, as a second scan would
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_contain_text("OL-L1-00000001-Z was already received by ana at")

    page.click('#awaiting-result tr[data-sample="1"] a[href="/sample/1"]')
    expect(page.locator("h1")).to_have_text("Sample 1")
    page.check("#found-yes")
    page.fill("#contaminant_type", "wood")
    page.fill("#mass_fraction_pct", "0,4")
    page.fill("#note", "three splinters")
    page.set_input_files("#photo", files=[{"name": "tray.png", "mimeType": "image/png", "buffer": png_bytes(8, 6)}])
    page.click("#save-result")
    expect(page.locator("#flash")).to_have_text("Result saved for OL-L1-00000001-Z: wood; status analysed")
    result_row = page.locator("#results tr[data-result]")
    expect(result_row).to_have_count(1)
    expect(result_row).to_contain_text("0.4 %")
    expect(result_row.locator("a")).to_have_text("photo")
    expect(page.locator("#details .status")).to_have_text("analysed")

    page.click('#details a[href^="/lot?"]')
    expect(page.locator("h1")).to_have_text("Lot LOT-7")
    rows = page.locator("#lot-samples tr[data-sample]")
    expect(rows).to_have_count(4)
    shown = {row.get_attribute("data-sample"): row.locator(".status").inner_text() for row in rows.all()}
    assert shown == {"1": "analysed", "2": "collected", "3": "cut", "4": "received"}
    expect(page.locator('#lot-samples tr[data-sample="1"]')).to_contain_text("wood 0.4 %")

    assert [(h.status, h.who) for h in desk_registry.history(1)][-3:] == [
        ("collected", "ana"), ("received", "ana"), ("analysed", "ana")]
    (result,) = desk_registry.results(1)
    assert (result.contaminant_type, result.mass_fraction, result.who) == ("wood", pytest.approx(0.004), "ana")


def test_a_result_for_a_cup_not_yet_received_is_refused_in_the_browser(desk_page, desk_server, desk_registry):
    from playwright.sync_api import expect
    page = desk_page
    sign_in(page, "ana", desk_server.url)
    page.goto("/sample/2")  # collected, not received: the page offers receipt, not a result form
    expect(page.locator("#result-form")).to_have_count(0)
    page.click("#receive-here")
    expect(page.locator("#flash")).to_contain_text("Received OL-L1-00000002-")
    assert desk_registry.current_status(2) == "received"


def test_inspector_prints_a_label_that_scans_and_exports_a_search(desk_page, desk_server):
    from playwright.sync_api import expect
    page = desk_page
    sign_in(page, "ivo", desk_server.url)
    expect(page.locator("#barcode")).to_have_count(0)  # inspectors look, they do not receive

    page.goto("/sample/8/label")
    label = page.locator("#label")
    expect(label).to_be_visible()
    page.wait_for_function("document.getElementById('label').complete && "
                           "document.getElementById('label').naturalWidth > 0")
    image = cv2.imdecode(np.frombuffer(label.screenshot(), np.uint8), cv2.IMREAD_GRAYSCALE)
    decoded = [(r.text, r.format.name) for r in zxing().read_barcodes(image)]
    assert decoded == [(make_barcode("L1", 8), "Code128")]

    page.goto("/search")
    page.fill("#vessel", "iron duke")
    page.select_option("#status", "sealed")
    page.click("#search")
    expect(page.locator("#count")).to_have_text("2")
    with page.expect_download() as download_info:
        page.click("#export")
    text = open(download_info.value.path(), encoding="utf-8-sig").read()
    assert [r["sample_id"] for r in csv.DictReader(io.StringIO(text))] == ["8", "7"]
