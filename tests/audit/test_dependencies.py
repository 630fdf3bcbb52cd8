"""A changed dependency is noticed (docs/ml-test-score.md, Monitor 1).

Every package, transitive ones included, is pinned in requirements.lock. If the
environment the suite runs in holds another version of any of them, a package the lock
does not name, or lacks one it names, this test fails and names each difference, so an
upgrade cannot slip into a run unnoticed. (A change of the upstream data is noticed by
the sha256 checks of tests/ingest/test_fetch.py.)
"""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
# Installed without a pin: the project itself (editable) and pip, which `make setup`
# pins on its own command line.
UNPINNED = {"mnist-tfx", "pip"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)\s*(?:;.*)?$")


def normalise(name: str) -> str:
    """PEP 503 names: case and runs of '-', '_', '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, str]:
    """name -> version of every ``name==version`` line; any other line is an error."""
    pins = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if not match:
            raise ValueError(f"requirements.lock line {number}: {line!r} is not name==version")
        pins[normalise(match.group(1))] = match.group(2)
    return pins


def differences(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    found = []
    for name, version in sorted(pins.items()):
        if name not in installed:
            found.append(f"{name}: pinned {version}, not installed")
        elif installed[name] != version:
            found.append(f"{name}: pinned {version}, installed {installed[name]}")
    for name in sorted(set(installed) - set(pins) - UNPINNED):
        found.append(f"{name}: installed {installed[name]}, not in requirements.lock")
    return found


def test_read_lock_and_differences_name_each_change():
    pins = read_lock("# comment\nNumPy==1.26.4\ntf_keras==2.16.0 ; python_version < '3.11'\n")
    assert pins == {"numpy": "1.26.4", "tf-keras": "2.16.0"}
    installed = {"numpy": "2.0.0", "requests": "2.32.0", "pip": "24.2"}
    assert differences(pins, installed) == [
        "numpy: pinned 1.26.4, installed 2.0.0",
        "tf-keras: pinned 2.16.0, not installed",
        "requests: installed 2.32.0, not in requirements.lock",
    ]
    try:
        read_lock("numpy>=1.26\n")
    except ValueError as error:
        assert str(error) == "requirements.lock line 1: 'numpy>=1.26' is not name==version"
    else:
        raise AssertionError("an unpinned requirement was accepted")


def test_installed_packages_are_exactly_the_locked_ones():
    pins = read_lock(LOCK.read_text())
    assert len(pins) > 300  # the whole TFX stack, transitive packages included
    # Only the environment's site-packages: importing setuptools puts its _vendor folder,
    # with older copies of a few packages, on sys.path, and those are not installed ones.
    site_packages = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    installed = {
        normalise(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=site_packages)
    }
    assert differences(pins, installed) == []
