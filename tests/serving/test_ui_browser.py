"""The draw-a-digit page in headless Chromium (Debian's ``/usr/bin/chromium``) driven by
Playwright (npm ``playwright-core``, pinned in tests/browser/package-lock.json and
installed by ``make browser-js``): tests/browser/draw_digit.mjs draws a "1" and a "0"
with mouse strokes on a real server serving a model trained well enough to read them
(tests/ui_model_fixture.py), and the page must show those classes on top, three classes
with their probabilities and the version that answered, having fetched nothing from
anywhere but the server. The same server serves the model's weights under Fashion-MNIST's
class names too: the page offers its warm-up images instead of the pad, and a click sends
that image and shows Fashion's names.

It skips, saying why, only when node, playwright-core or Chromium is missing; `make test`
installs all three.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.serving_fixture import MODEL_NAME, REPO, ServerProcess, mnist_images, push
from tests.ui_model_fixture import FASHION_CLASS_NAMES, trained_export

pytestmark = pytest.mark.slow
BROWSER_DIR = REPO / "tests" / "browser"
SCRIPT = BROWSER_DIR / "draw_digit.mjs"
CHROMIUM = "/usr/bin/chromium"
VERSION = 17
FASHION_MODEL = "fashion"
FASHION_VERSION = 23


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (make browser-js installs Debian's nodejs and npm)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "tests/browser/node_modules/playwright-core is missing (run make browser-js)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (run make browser)"
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("ui-browser")
    push(trained_export("mnist"), root / MODEL_NAME, VERSION)
    push(trained_export("fashion_mnist"), root / FASHION_MODEL, FASHION_VERSION)
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{root / name}" }}\n'
            for name in (MODEL_NAME, FASHION_MODEL)
        )
        + "}\n"
    )
    process = ServerProcess(root, "--model-config-file", str(config))
    process.wait_serving([VERSION])
    process.wait_serving([FASHION_VERSION], model=FASHION_MODEL)
    yield process
    process.stop()


def test_drawn_one_and_zero_are_read(server, tmp_path):
    shot = tmp_path / "page.png"
    proc = subprocess.run(
        ["node", str(SCRIPT), f"{server.url}/"],
        cwd=BROWSER_DIR,
        env={
            **os.environ,
            "CHROMIUM": CHROMIUM,
            "SCREENSHOT": str(shot),
            "PICK_MODEL": FASHION_MODEL,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print({key: results[key]["top3"] for key in ("one", "zero")})  # shown with -s
    assert results["foreign_requests"] == []
    for key, digit in (("one", 1), ("zero", 0)):
        shown = results[key]
        assert shown["state"] == "done", shown["status"]
        assert shown["version"] == str(VERSION)
        top3 = shown["top3"]
        assert [entry["class"] for entry in top3][:1] == [digit], (key, top3)
        assert len(top3) == 3 and len({entry["class"] for entry in top3}) == 3
        assert [entry["name"] for entry in top3] == [str(entry["class"]) for entry in top3]
        probabilities = [entry["probability"] for entry in top3]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-6
        assert probabilities[0] > 0.5, (key, top3)
        # What was sent is an MNIST-style digit: ink inside the 20x20 box, mass centred.
        sent = shown["sent"]
        rows = [y for y, row in enumerate(sent) if any(row)]
        columns = [x for x in range(28) if any(row[x] for row in sent)]
        assert max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 == 20, (rows, columns)
        mass = sum(map(sum, sent))
        centre_y = sum((y + 0.5) * v for y, row in enumerate(sent) for v in row) / mass
        centre_x = sum((x + 0.5) * v for row in sent for x, v in enumerate(row)) / mass
        assert abs(centre_x - 14) <= 0.5 and abs(centre_y - 14) <= 0.5
        assert max(map(max, sent)) == 255
    assert shot.stat().st_size > 10_000

    # The Fashion-named model: no pad, its 16 warm-up images to pick; the first was sent.
    picked = results["picked"]
    assert picked["state"] == "done", picked["status"]
    assert picked["draw_panel_hidden"] is True and picked["samples"] == 16
    np.testing.assert_array_equal(np.array(picked["sent"]), mnist_images("t10k")[0][0])
    assert picked["version"] == str(FASHION_VERSION)
    assert len(picked["top3"]) == 3
    for entry in picked["top3"]:
        assert entry["name"] == FASHION_CLASS_NAMES[entry["class"]]
    # The first test image is a 7, which the model reads: Fashion's class 7.
    assert picked["top3"][0]["name"] == "Sneaker"
