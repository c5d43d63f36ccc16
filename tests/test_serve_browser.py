"""``kdskin serve`` end to end in a real browser: Playwright driving the system's Chromium.

Skipped with the reason when Playwright or a Chromium binary is missing (Debian/Ubuntu:
``apt-get install chromium``; another binary: ``KDSKIN_CHROMIUM=/path/to/chrome``). The server
is uvicorn on 127.0.0.1 on a free port in a thread; every request the page makes to any other
host is blocked and fails the test, so the page and the schema page are checked offline.

By default the server serves a small run built in seconds (``tests/test_serve.py``) and the page
gets an image of the built-in generated dataset. ``KDSKIN_SERVE_RUN=RUN_DIR`` and
``KDSKIN_SERVE_IMAGE=FILE`` use a real run and image instead, and
``KDSKIN_SERVE_SCREENSHOT=PNG`` saves the page once both overlays are shown (docs/serve.png)::

    KDSKIN_SERVE_RUN=runs/quickstart KDSKIN_SERVE_IMAGE=IMAGE.jpg \\
    KDSKIN_SERVE_SCREENSHOT=docs/serve.png pytest -q tests/test_serve_browser.py -k overlays
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install playwright)")

from tests.test_serve import build_run  # noqa: E402


def chromium_path() -> str | None:
    """The system Chromium: ``$KDSKIN_CHROMIUM``, /usr/bin/chromium, or one on the PATH."""
    for candidate in (os.environ.get("KDSKIN_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = chromium_path()
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium browser installed "
                                 "(apt-get install chromium, or set KDSKIN_CHROMIUM)"),
              pytest.mark.slow]  # every test serves a trained, converted run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from kdskin.serve.model import ServedModel

    run = os.environ.get("KDSKIN_SERVE_RUN") or build_run(
        tmp_path_factory.mktemp("browser") / "run")
    served = ServedModel.from_run(run)
    served.warm_up()
    return served


@pytest.fixture(scope="module")
def server(served) -> Iterator[str]:
    import uvicorn

    from kdskin.serve.app import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def lesion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image of the built-in generated dataset (kdskin data synth), or $KDSKIN_SERVE_IMAGE."""
    from kdskin.data.synth import generate_dataset

    if os.environ.get("KDSKIN_SERVE_IMAGE"):
        return Path(os.environ["KDSKIN_SERVE_IMAGE"])
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n_images=21, image_size=96, seed=0)
    return sorted(root.rglob("*.jpg"))[0]


@pytest.fixture
def page(server: str) -> Iterator[tuple[object, list[str]]]:
    """A fresh page whose requests to anything but the server are blocked and recorded."""
    external: list[str] = []

    def route(r):
        if r.request.url.startswith(server) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1100, "height": 900})
            pg.route("**/*", route)
            yield pg, external
        finally:
            browser.close()


def test_page_shows_classes_referral_and_both_overlays(page, server, served, lesion):
    pg, external = page
    expect = sync_api.expect
    pg.goto(server + "/")
    expect(pg.locator("#notice")).to_contain_text("Not a medical device")
    pg.set_input_files("#file", str(lesion))
    expect(pg.locator("#classes li")).to_have_count(7, timeout=30_000)
    expect(pg.locator("#classes li.top .name")).to_have_text(
        pg.locator("#classes li .name").first.inner_text())
    # "REFER: ..." or "No referral: ..." (both name the malignant probability and threshold)
    expect(pg.locator("#referral")).to_contain_text("refer", ignore_case=True)
    expect(pg.locator("#referral")).to_contain_text("threshold")
    threshold = served.rules.referral_threshold
    expect(pg.locator("#referral")).to_contain_text(f"threshold {threshold:.3f}")
    expect(pg.locator("#oos")).not_to_be_empty()
    expect(pg.locator("#input-img")).to_be_visible()
    for slot in ("#cam-img", "#lime-img"):
        expect(pg.locator(slot)).to_be_visible(timeout=60_000)
        assert pg.locator(slot).get_attribute("src").startswith("data:image/png;base64,")
    expect(pg.locator("#lime-progress")).to_be_hidden()
    expect(pg.locator("#lime-caption")).to_contain_text("LIME for")
    expect(pg.locator("#cam-caption")).to_contain_text("Grad-CAM for")
    pg.select_option("#cam-method", "scorecam")
    expect(pg.locator("#cam-caption")).to_contain_text("Score-CAM for", timeout=60_000)
    expect(pg.locator("#error")).to_be_hidden()
    if os.environ.get("KDSKIN_SERVE_SCREENSHOT"):
        pg.screenshot(path=os.environ["KDSKIN_SERVE_SCREENSHOT"], full_page=True)
    assert external == []


def test_page_shows_a_clear_message_for_a_bad_file(page, server, tmp_path):
    pg, external = page
    expect = sync_api.expect
    pg.goto(server + "/")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not really a picture\n")
    pg.set_input_files("#file", str(bad))
    expect(pg.locator("#error")).to_be_visible(timeout=30_000)
    expect(pg.locator("#error")).to_contain_text("notes.jpg: not an image file")
    expect(pg.locator("#result")).to_be_hidden()
    assert external == []


def test_schema_page_renders_offline(page, server):
    pg, external = page
    pg.goto(server + "/docs")
    title = pg.locator(".swagger-ui .info .title")
    sync_api.expect(title).to_contain_text("kdskin serve", timeout=30_000)
    sync_api.expect(pg.locator(".opblock-summary-path", has_text="/predict")).to_be_visible()
    assert external == []
