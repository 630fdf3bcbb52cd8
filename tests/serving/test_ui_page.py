"""The draw-a-digit page (serving/ui/) over plain HTTP: ``GET /`` serves the page with the
served models injected and nothing fetched from elsewhere, ``GET /ui/samples`` answers the
served version's warm-up images, client mistakes get one-line JSON errors, and
``--no-ui`` turns both off while the /v1/ API stays. The browser test is
test_ui_browser.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import requests

from serving.ui import warmup_images
from tests.serving_fixture import (
    MODEL_NAME,
    SHARED_VERSION,
    ServerProcess,
    exported_versions,
    mnist_images,
    push,
    shared_server,
)

WARMUP_COUNT = 16  # exported_versions() writes the first 16 fixture test images


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    return shared_server()


@pytest.fixture(scope="module")
def no_ui_server(tmp_path_factory) -> ServerProcess:
    root = tmp_path_factory.mktemp("no-ui")
    push(exported_versions()[0], root / MODEL_NAME, 5)
    process = ServerProcess(root, "--model-base-path", str(root / MODEL_NAME), "--no-ui")
    process.wait_serving([5])
    yield process
    process.stop()


def _models(page: str) -> list[dict]:
    match = re.search(
        r'<script type="application/json" id="ui-models">(.*?)</script>', page, re.DOTALL
    )
    assert match, "the page has no ui-models JSON"
    return json.loads(match.group(1))


def test_page_is_html_naming_the_served_model_and_its_classes(server):
    response = requests.get(f"{server.url}/", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert _models(response.text) == [
        {
            "name": MODEL_NAME,
            "version": SHARED_VERSION,
            "class_names": [str(digit) for digit in range(10)],
            "digits": True,
        }
    ]
    assert "<canvas" in response.text and "predict_pixels_uint8" in response.text


def test_page_loads_nothing_from_elsewhere(server):
    page = requests.get(f"{server.url}/", timeout=30).text
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page


def test_samples_are_the_versions_warmup_images(server):
    response = requests.get(f"{server.url}/ui/samples", params={"model": MODEL_NAME}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL_NAME and body["version"] == SHARED_VERSION
    images = np.array(body["images"])
    assert images.shape == (WARMUP_COUNT, 28, 28)
    assert images.min() >= 0 and images.max() <= 255
    expected_images, expected_labels = mnist_images("t10k")
    np.testing.assert_array_equal(images, expected_images[:WARMUP_COUNT])
    assert body["labels"] == expected_labels[:WARMUP_COUNT].tolist()


def test_warmup_images_reads_the_exported_file():
    path = exported_versions()[0] / "assets.extra" / "tf_serving_warmup_requests"
    images, labels = warmup_images(str(path))
    expected_images, expected_labels = mnist_images("t10k")
    # The file repeats the first image in its other signatures' requests: read once.
    assert len(images) == WARMUP_COUNT
    np.testing.assert_array_equal(np.stack(images), expected_images[:WARMUP_COUNT])
    assert labels == expected_labels[:WARMUP_COUNT].tolist()
    assert warmup_images(str(path), limit=3)[1] == expected_labels[:3].tolist()
    assert warmup_images(str(path.parent / "absent")) == ([], [])


@pytest.mark.parametrize(
    ("query", "status", "expected"),
    [
        (
            {"model": "nope"},
            404,
            "/ui/samples: model 'nope' is not served here; expected one of mnist",
        ),
        ({}, 400, "/ui/samples: expected ?model=NAME, one of the served models (mnist)"),
    ],
)
def test_samples_client_mistakes_are_json_errors(server, query, status, expected):
    response = requests.get(f"{server.url}/ui/samples", params=query, timeout=30)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"error": expected}
    assert "\n" not in response.json()["error"]


def test_no_ui_turns_the_page_off_and_keeps_the_api(no_ui_server):
    assert requests.get(f"{no_ui_server.url}/", timeout=30).status_code == 404
    samples = requests.get(
        f"{no_ui_server.url}/ui/samples", params={"model": MODEL_NAME}, timeout=30
    )
    assert samples.status_code == 404
    status = requests.get(f"{no_ui_server.url}/v1/models/{MODEL_NAME}", timeout=30)
    assert status.status_code == 200
    assert status.json()["model_version_status"][0]["version"] == "5"
