"""The Pusher executor (``components/pusher/executor.py``) called as TFX calls it, with
real artifacts: blessing check, atomic versions, no duplicate of the model being
served, pruning to the newest N, and the MLMD properties it sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from components.pusher.executor import AtomicPushExecutor
from serving.publish import list_versions


def _model(root: Path, payload: bytes) -> standard_artifacts.Model:
    serving = root / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"graph")
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(payload)
    model = standard_artifacts.Model()
    model.uri = str(root)
    return model


def _blessing(root: Path, blessed: bool) -> standard_artifacts.ModelBlessing:
    root.mkdir(parents=True)
    (root / ("BLESSED" if blessed else "NOT_BLESSED")).write_text("")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root)
    blessing.set_int_custom_property("blessed", int(blessed))
    return blessing


def _push(tmp_path: Path, name: str, payload: bytes, blessed: bool, keep: int = 0):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed" / name)
    base = tmp_path / "serving" / "mnist"
    AtomicPushExecutor().Do(
        {
            "model": [_model(tmp_path / "models" / name, payload)],
            "model_blessing": [_blessing(tmp_path / "blessings" / name, blessed)],
        },
        {"pushed_model": [pushed]},
        {
            "push_destination": json.dumps({"filesystem": {"base_directory": str(base)}}),
            # The payloads are not loadable SavedModels: verification is tested with a
            # real model in test_verify.py.
            "custom_config": json.dumps({"keep_versions": keep, "verify": False}),
        },
    )
    return pushed, base


def test_blessed_model_becomes_a_complete_integer_version(tmp_path):
    pushed, base = _push(tmp_path, "a", b"weights-a", blessed=True)
    (version,) = list_versions(base)
    assert sorted(p.name for p in base.iterdir()) == [str(version)]
    assert (base / str(version) / "variables" / "variables.data-00000-of-00001").read_bytes() == (
        b"weights-a"
    )
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == str(version)
    assert pushed.get_string_custom_property("pushed_destination") == str(base / str(version))


def test_unblessed_model_is_not_pushed(tmp_path):
    pushed, base = _push(tmp_path, "a", b"weights-a", blessed=False)
    assert not base.exists()
    assert pushed.get_int_custom_property("pushed") == 0


def test_model_already_served_is_not_copied_again(tmp_path):
    first, base = _push(tmp_path, "a", b"same", blessed=True)
    again, _ = _push(tmp_path, "b", b"same", blessed=True)
    assert len(list_versions(base)) == 1
    assert again.get_string_custom_property("pushed_version") == (
        first.get_string_custom_property("pushed_version")
    )
    assert again.get_int_custom_property("reused_version") == 1


@pytest.mark.parametrize("keep", [1, 2])
def test_only_the_newest_versions_are_kept(tmp_path, keep):
    for index in range(3):
        pushed, base = _push(tmp_path, f"m{index}", f"weights-{index}".encode(), True, keep)
    versions = list_versions(base)
    assert len(versions) == keep
    assert versions[-1] == int(pushed.get_string_custom_property("pushed_version"))
    newest = base / str(versions[-1]) / "variables" / "variables.data-00000-of-00001"
    assert newest.read_bytes() == b"weights-2"
