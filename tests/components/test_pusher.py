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


def _push(
    tmp_path: Path,
    name: str,
    payload: bytes,
    blessed: bool,
    keep: int = 0,
    models_config: Path | None = None,
):
    custom_config = {"keep_versions": keep, "verify": False}
    if models_config is not None:
        custom_config["models_config"] = str(models_config)
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
            "custom_config": json.dumps(custom_config),
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


def _payload(base: Path, version: int) -> bytes:
    return (base / str(version) / "variables" / "variables.data-00000-of-00001").read_bytes()


def test_versions_labelled_in_models_config_are_not_pruned(tmp_path):
    """keep_versions=1 with custom_config["models_config"] labelling the first version:
    the first (labelled) and the newest (served) survive, the middle one goes. Labels
    of another model in the same file do not count."""
    config = tmp_path / "models.config"
    pushed, base = _push(tmp_path, "m0", b"weights-0", True)
    first = int(pushed.get_string_custom_property("pushed_version"))
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "mnist" base_path: "/models/mnist" '
        f'version_labels {{ key: "stable" value: {first} }} }}\n'
        '  config { name: "fashion_mnist" base_path: "/models/fashion_mnist" '
        f'version_labels {{ key: "stable" value: {first + 1} }} }}\n'
        "}\n"
    )
    for index in (1, 2):
        pushed, _ = _push(tmp_path, f"m{index}", f"weights-{index}".encode(), True, 1, config)
    newest = int(pushed.get_string_custom_property("pushed_version"))
    assert list_versions(base) == [first, newest]
    assert (_payload(base, first), _payload(base, newest)) == (b"weights-0", b"weights-2")
    assert [p.name for p in base.iterdir() if p.name.startswith(".")] == []


def test_bad_models_config_fails_the_push_before_anything_is_written(tmp_path):
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "mnist" } }')
    with pytest.raises(ValueError, match=f"--models-config {config}: model mnist has no base_path"):
        _push(tmp_path, "a", b"weights-a", True, 1, config)
    base = tmp_path / "serving" / "mnist"
    assert not base.exists() or list(base.iterdir()) == []
