"""``mnist-tfx versions --max-age-days``: the staleness check of the served model (ML
Test Score, Monitor 4), on real version directories, a real rollback log and a real
(empty) ML Metadata store; no pipeline run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from cli.errors import EXIT_OK, EXIT_STALE
from cli.main import main
from serving.publish import ROLLBACK_LOG

DAY = 86400


@pytest.fixture
def serving(tmp_path, monkeypatch) -> Path:
    """OUTPUT_ROOT=tmp_path/out with an ML Metadata store and an empty base path."""
    monkeypatch.chdir(tmp_path)
    store_path = tmp_path / "out" / "mnist_cnn" / "metadata.sqlite"
    store_path.parent.mkdir(parents=True)
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(store_path)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    metadata_store.MetadataStore(config)
    base = tmp_path / "out" / "serving" / "mnist"
    base.mkdir(parents=True)
    return base


def _version(base: Path, days_ago: float) -> int:
    version = int(time.time() - days_ago * DAY)
    (base / str(version)).mkdir()
    return version


def _versions(*flags: str) -> int:
    return main(["versions", "--dataset", "mnist", "--output-root", "out", *flags])


def test_a_fresh_model_passes_and_says_its_age(serving, capsys):
    version = _version(serving, 10)
    assert _versions("--max-age-days", "30") == EXIT_OK
    out = capsys.readouterr().out
    assert f"served version {version}: model pushed " in out
    assert "10.0 days ago" in out


def test_an_old_model_exits_5_naming_version_age_and_bound(serving, capsys):
    _version(serving, 40)
    version = _version(serving, 8)
    assert _versions("--max-age-days", "7") == EXIT_STALE == 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: the served version {version} holds a model pushed ")
    assert "8.0 days ago: older than --max-age-days 7;" in err


def test_a_rollback_copy_is_as_old_as_the_model_it_restores(serving, capsys):
    old = _version(serving, 40)
    _version(serving, 20)
    copy = _version(serving, 0)
    record = {"version": copy, "restores": old, "replaced": copy - 1, "at": "x"}
    (serving / ROLLBACK_LOG).write_text(json.dumps(record) + "\n")
    assert _versions("--max-age-days", "30") == EXIT_STALE
    err = capsys.readouterr().err
    assert f"served version {copy} (restoring version {old})" in err
    assert "40.0 days ago" in err


def test_nothing_served_is_stale(serving, capsys):
    assert _versions("--max-age-days", "30") == EXIT_STALE
    assert "nothing is served" in capsys.readouterr().err


def test_a_negative_bound_is_a_usage_error(serving, capsys):
    _version(serving, 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["versions", "--dataset", "mnist", "--output-root", "out", "--max-age-days", "x"])
    assert exit_info.value.code == 2


def test_a_version_not_named_by_its_push_time_is_as_old_as_its_directory(serving, capsys):
    import os

    hand_named = serving / "7"
    hand_named.mkdir()
    stamp = time.time() - 12 * DAY
    os.utime(hand_named, (stamp, stamp))
    assert _versions("--max-age-days", "10") == EXIT_STALE
    assert "12.0 days ago" in capsys.readouterr().err


def test_a_rollback_of_a_gone_hand_named_version_has_no_age(serving, capsys):
    copy = _version(serving, 0)
    record = {"version": copy, "restores": 7, "replaced": copy - 1, "at": "x"}
    (serving / ROLLBACK_LOG).write_text(json.dumps(record) + "\n")
    assert _versions("--max-age-days", "10") != EXIT_OK
    err = capsys.readouterr().err
    assert f"version {copy} restores version 7, which is gone and not named by its push" in err
