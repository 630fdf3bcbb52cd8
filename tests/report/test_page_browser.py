"""The evaluation report's index.html opened in a real browser: Debian's headless
Chromium renders it (a screenshot of the expected size showing the figures'
colours) and, asked over the DevTools protocol, reports every embedded image
decoded at its PNG's size and no request made for anything.

Chromium is required, not optional: when ``/usr/bin/chromium`` is missing these
tests fail and say how to install it (``make browser``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from report.figures import png_size
from report.files import HTML_FILE
from tests.report_fixture import ReportRun, report_run

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
WINDOW = (1200, 3000)
# The per-class accuracy bars' colour: on the page only inside an embedded PNG.
BAR_RGB = (0x4C, 0x72, 0xB0)

# Run in the page once it has loaded: decode every image, list what was fetched.
PAGE_CHECK = """
new Promise((resolve) => {
  const check = () => Promise.all(Array.from(document.images, (img) =>
      img.decode().then(
        () => ({decoded: true, width: img.naturalWidth, height: img.naturalHeight}),
        (error) => ({decoded: false, error: String(error)}))))
    .then((images) => resolve({
      images,
      resources: performance.getEntriesByType("resource").map((entry) => entry.name),
      scripts: document.scripts.length,
      title: document.title,
      text: document.body.innerText,
    }));
  if (document.readyState === "complete") check();
  else window.addEventListener("load", check);
})
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found: these tests open the evaluation report in headless "
            "Chromium. Run `make browser` (apt-get install -y chromium) and test again."
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> ReportRun:
    return report_run("fashion_mnist", tmp_path_factory)


def _page_url(run: ReportRun) -> str:
    return (run.directory / HTML_FILE).as_uri()


def test_screenshot_shows_the_rendered_report(chromium, run, tmp_path):
    from PIL import Image

    shot = tmp_path / "page.png"
    proc = subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            _page_url(run),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-3000:]
    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # Text, tables and figures: a blank page would have one colour.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    assert (pixels < 128).all(axis=-1).sum() > 10_000  # dark text and figure ink
    bars = (np.abs(pixels - BAR_RGB) <= 3).all(axis=-1)
    assert bars.sum() > 5_000, "the per-class accuracy figure was not drawn"


async def _load_and_evaluate(port: int, url: str, expression: str) -> dict:
    """Over the DevTools protocol: open ``url`` in the blank page, wait for its load
    event, then evaluate ``expression`` there (awaiting its promise)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        pages: list = []
        for _ in range(200):
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            if pages:
                break
            await asyncio.sleep(0.05)
        assert pages, "Chromium opened no page"
        async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:

            async def call(call_id: int, method: str, **params) -> dict:
                await ws.send_json({"id": call_id, "method": method, "params": params})
                async for message in ws:
                    answer = json.loads(message.data)
                    if answer.get("id") == call_id:
                        assert "error" not in answer, answer
                        return answer["result"]
                raise AssertionError(f"no answer to {method}")

            await call(1, "Page.enable")
            await ws.send_json({"id": 2, "method": "Page.navigate", "params": {"url": url}})
            async for message in ws:
                if json.loads(message.data).get("method") == "Page.loadEventFired":
                    break
            result = await call(
                3, "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
            )
            assert "exceptionDetails" not in result, result
            return result["result"]["value"]


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    """Chromium writes the port it chose into <profile>/DevToolsActivePort."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise AssertionError(f"Chromium exited with {proc.returncode}")
        time.sleep(0.05)
    raise AssertionError("Chromium did not open its DevTools port")


def test_every_image_decodes_and_nothing_is_fetched(chromium, run, tmp_path):
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = _devtools_port(profile, proc)
        page = asyncio.run(
            asyncio.wait_for(_load_and_evaluate(port, _page_url(run), PAGE_CHECK), timeout=60)
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    figures = run.report["figures"].values()
    sizes = sorted(png_size((run.directory / name).read_bytes()) for name in figures)
    assert len(page["images"]) == len(figures) == 5
    assert all(image["decoded"] for image in page["images"]), page["images"]
    assert sorted((i["width"], i["height"]) for i in page["images"]) == sizes
    assert page["scripts"] == 0
    assert [name for name in page["resources"] if not name.startswith("data:")] == []
    assert page["title"].startswith("Evaluation report: fashion_mnist")
    for name in run.inputs.class_names:
        assert name in page["text"]
