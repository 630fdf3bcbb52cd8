"""Shared fixtures: the committed real-data fixture (300 train / 200 test images per dataset).

Keras 2 (``tf_keras``) is selected before any test module imports TensorFlow, as
``import trainer`` does in production.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ingest.idx import read_idx_pair  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def _read_split(dataset: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    directory = FIXTURES / dataset
    return read_idx_pair(
        directory / f"{prefix}-images-idx3-ubyte.gz", directory / f"{prefix}-labels-idx1-ubyte.gz"
    )


@pytest.fixture(scope="session")
def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """The 300 MNIST training images (uint8 [300, 28, 28]) and labels (uint8 [300])."""
    return _read_split("mnist", "train")


@pytest.fixture(scope="session")
def mnist_eval() -> tuple[np.ndarray, np.ndarray]:
    """The 200 MNIST test images (uint8 [200, 28, 28]) and labels (uint8 [200]), from
    the fixture's t10k files: the official test set's, which spans keep as ``test``."""
    return _read_split("mnist", "t10k")


@pytest.fixture(scope="session")
def fashion_train() -> tuple[np.ndarray, np.ndarray]:
    """The 300 Fashion-MNIST training images and labels."""
    return _read_split("fashion_mnist", "train")


# --- TFX's leftover packages ---------------------------------------------------------
# A TFX Beam executor given no dependency option builds an sdist of TFX itself in a new
# temporary directory (tfx.utils.dependency_utils.build_ephemeral_package, ~49 MB) and
# never deletes it. The pipeline's local runs no longer trigger it
# (pipeline/beam_runners.py, with_local_dependencies), but tests that call executors
# directly, or run a compiled Kubeflow spec, still do; a full suite used to leave
# hundreds of them. The test session removes those it made, and the small sdists of
# this project that Beam stages in their place.
_SESSION_START = 0.0


def pytest_sessionstart(session):
    global _SESSION_START
    import time

    _SESSION_START = time.time() - 1


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller cleans up once every worker is done
    import shutil
    import tempfile

    temp = Path(tempfile.gettempdir())
    for sdist in temp.glob("tmp*/build/tfx/dist/tfx_ephemeral-*"):
        top = sdist.parents[3]
        if top.stat().st_mtime >= _SESSION_START:
            shutil.rmtree(top, ignore_errors=True)
    # Beam's stager lists that package in an extra_packages.txt of another temp dir.
    for listing in temp.glob("tmp*/extra_packages.txt"):
        top = listing.parent
        if top.stat().st_mtime >= _SESSION_START and "tfx_ephemeral" in listing.read_text():
            shutil.rmtree(top, ignore_errors=True)
    # Beam's own DirectRunner (not the local runs' LocalDirectRunner) first tries Prism,
    # whose environment stages --setup_file: an sdist of this project (~250 KB) in a
    # temp dir of its own, from any test that runs it with that option.
    for sdist in temp.glob("tmp*/mnist_tfx-*.tar.gz"):
        top = sdist.parent
        if top.stat().st_mtime >= _SESSION_START and len(list(top.iterdir())) == 1:
            shutil.rmtree(top, ignore_errors=True)
