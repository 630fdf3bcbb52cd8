"""Tests of serving/publish.py: atomic, ever-growing SavedModel versions."""

from pathlib import Path

import pytest

from serving.publish import (
    TEMP_PREFIX,
    current_version_if_same,
    list_versions,
    next_version,
    prune_versions,
    publish_saved_model,
    remove_stale_temporaries,
    tree_digest,
)

NOW = 1_700_000_000.7


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> file bytes (None for directories) of everything below root."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    """A small directory laid out like a SavedModel."""
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "assets").mkdir()
    (model / "saved_model.pb").write_bytes(b"\x08\x01graph-def" * 10)
    (model / "fingerprint.pb").write_bytes(b"fp")
    (model / "variables" / "variables.index").write_bytes(b"index")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(range(256)) * 4)
    return model


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "serving" / "mnist"


def test_publish_creates_integer_version_with_identical_content(saved_model, base):
    """The version is int(now), its directory is base/<version> and holds an exact copy."""
    version, path = publish_saved_model(saved_model, base, now=NOW)
    assert version == 1_700_000_000
    assert path == str(base / "1700000000")
    assert sorted(p.name for p in base.iterdir()) == ["1700000000"]
    assert tree(Path(path)) == tree(saved_model)
    assert len(tree(saved_model)) == 6  # 2 directories + 4 files, empty assets/ included
    assert list_versions(base) == [1_700_000_000]


def test_publish_accepts_str_paths_and_leaves_source_untouched(saved_model, base):
    """Paths may be strings; the source directory is copied, not moved."""
    before = tree(saved_model)
    version, path = publish_saved_model(str(saved_model), str(base), now=NOW)
    assert tree(saved_model) == before
    assert tree(Path(path)) == before
    assert version == 1_700_000_000


def test_versions_grow_even_when_clock_goes_back(saved_model, base):
    """A later push with an earlier (or the same) clock still gets a larger version."""
    v1, _ = publish_saved_model(saved_model, base, now=NOW)
    v2, _ = publish_saved_model(saved_model, base, now=NOW - 3600)
    v3, _ = publish_saved_model(saved_model, base, now=NOW - 3600)
    v4, _ = publish_saved_model(saved_model, base, now=NOW + 100)
    assert [v1, v2, v3, v4] == [1_700_000_000, 1_700_000_001, 1_700_000_002, 1_700_000_100]
    assert list_versions(base) == [v1, v2, v3, v4]
    for version in (v1, v2, v3, v4):
        assert tree(base / str(version)) == tree(saved_model)


def test_next_version(tmp_path):
    """next_version is the clock on an empty or missing base, else max(clock, last + 1)."""
    assert next_version(tmp_path / "missing", now=12.9) == 12
    assert next_version(tmp_path, now=500.0) == 500
    (tmp_path / "700").mkdir()
    (tmp_path / "90").mkdir()
    assert next_version(tmp_path, now=500.0) == 701
    assert next_version(tmp_path, now=701.0) == 701
    assert next_version(tmp_path, now=1000.0) == 1000


def test_list_versions_ignores_non_numeric_names_and_files(tmp_path):
    """Only integer-named directories are versions, sorted numerically."""
    # "²" and "٣" are str.isdigit() but not versions (int("²") raises).
    for name in ["10", "9", "100", "v3", "12a", ".incoming-5-1", "-4", "1.5", "tmp", "²", "٣"]:
        (tmp_path / name).mkdir()
    (tmp_path / "77").write_text("a file, not a version")
    assert list_versions(tmp_path) == [9, 10, 100]
    assert list_versions(tmp_path / "missing") == []


def test_next_version_ignores_non_numeric_names(tmp_path):
    """Non-version entries do not influence the next version."""
    (tmp_path / "9999999999x").mkdir()
    (tmp_path / f"{TEMP_PREFIX}9999999999-1").mkdir()
    (tmp_path / "9999999999").write_text("file")
    assert next_version(tmp_path, now=42.0) == 42


def test_stale_temporaries_removed_on_next_publish(saved_model, base):
    """Half-written .incoming-* directories from a killed push are deleted; versions stay."""
    old_version, _ = publish_saved_model(saved_model, base, now=NOW)
    stale = base / f"{TEMP_PREFIX}1700000001-4242"
    (stale / "variables").mkdir(parents=True)
    (stale / "variables" / "variables.index").write_bytes(b"partial")
    other_stale = base / f"{TEMP_PREFIX}x"
    other_stale.mkdir()
    unrelated = base / "notes"
    unrelated.mkdir()

    version, _ = publish_saved_model(saved_model, base, now=NOW)

    assert version == old_version + 1
    assert sorted(p.name for p in base.iterdir()) == [str(old_version), str(version), "notes"]
    assert tree(base / str(old_version)) == tree(saved_model)


def test_remove_stale_temporaries_returns_removed_names(tmp_path):
    """remove_stale_temporaries deletes only .incoming-* entries and names them."""
    (tmp_path / f"{TEMP_PREFIX}1-2" / "sub").mkdir(parents=True)
    (tmp_path / f"{TEMP_PREFIX}3-4").mkdir()
    (tmp_path / "5").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == [f"{TEMP_PREFIX}1-2", f"{TEMP_PREFIX}3-4"]
    assert [p.name for p in tmp_path.iterdir()] == ["5"]
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_source_without_saved_model_pb_raises_and_writes_nothing(tmp_path, base):
    """A directory that is not a SavedModel is refused before anything is created."""
    not_a_model = tmp_path / "empty_export"
    (not_a_model / "variables").mkdir(parents=True)
    (not_a_model / "saved_model.pbtxt").write_text("text format is not what is checked")
    with pytest.raises(
        FileNotFoundError, match=r"empty_export: no saved_model\.pb, not a SavedModel"
    ):
        publish_saved_model(not_a_model, base, now=NOW)
    assert not base.exists()


def test_missing_source_raises_and_writes_nothing(tmp_path, base):
    """A source directory that does not exist is refused."""
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        publish_saved_model(tmp_path / "nope", base, now=NOW)
    assert not base.exists()


def test_failed_publish_keeps_existing_versions_and_temporaries(saved_model, base, tmp_path):
    """A refused push leaves the base directory exactly as it was."""
    publish_saved_model(saved_model, base, now=NOW)
    (base / f"{TEMP_PREFIX}1-1").mkdir()
    before = tree(base)
    with pytest.raises(FileNotFoundError):
        publish_saved_model(tmp_path / "nope", base, now=NOW)
    assert tree(base) == before


@pytest.mark.parametrize("uri", ["gs://bucket/models/mnist", "s3://bucket/mnist", "hdfs://nn/m"])
def test_remote_base_raises_not_implemented(saved_model, uri):
    """Remote filesystems cannot rename atomically, so they are refused."""
    with pytest.raises(NotImplementedError, match=r"atomic publishing needs a local or mounted"):
        publish_saved_model(saved_model, uri, now=NOW)


def test_same_model_as_newest_version_is_recognised(saved_model, base):
    """Re-blessing the model being served finds its version instead of copying it again."""
    assert current_version_if_same(saved_model, base) is None
    version, path = publish_saved_model(saved_model, base, now=1000)
    assert current_version_if_same(saved_model, base) == (version, path)
    (saved_model / "variables" / "variables.index").write_bytes(b"retrained")
    assert current_version_if_same(saved_model, base) is None


def test_tree_digest_covers_names_and_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "f").write_bytes(b"x")
    assert tree_digest(a) == tree_digest(b)
    (b / "sub" / "f").rename(b / "sub" / "g")
    assert tree_digest(a) != tree_digest(b)


def test_prune_keeps_the_newest_versions(saved_model, base):
    for now in (1000, 2000, 3000, 4000):
        publish_saved_model(saved_model, base, now=now)
    assert prune_versions(base, keep=2) == [1000, 2000]
    assert list_versions(base) == [3000, 4000]
    assert sorted(p.name for p in base.iterdir()) == ["3000", "4000"]
    assert prune_versions(base, keep=5) == []


def test_prune_rejects_keeping_nothing(base):
    with pytest.raises(ValueError, match="keep_versions: expected >= 1, got 0"):
        prune_versions(base, keep=0)
