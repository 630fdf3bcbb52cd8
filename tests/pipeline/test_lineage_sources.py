"""Spans are never rewritten, and a pushed version's data lineage is what was recorded
when it was trained and pushed, not the span's manifest as it is now.

``pipeline/local_runner.py`` (``prepare_span``: reuse the latest span or write the
next one), ``ingest/spans.py`` (``add_next_span``), ExampleGen's lineage record
(``components/example_gen/executor.py``), the Trainer's ``sources.json``
(``trainer/export.py``), the Pusher's ``training_sources`` property and
``mnist-tfx versions`` (``pipeline/lineage.py``). The expected checksums are
computed here from the files, independently of the code under test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from ingest.spans import add_next_span, ingest_span, list_spans, span_dir
from tests.pipeline_fixture import FIXTURES, fail_text, pipeline_args, run_cli

TRAIN_IMAGES = "train-images-idx3-ubyte"


# ---------------------------------------------------------------- sources


def _copy_source(root: Path, name: str) -> Path:
    """A copy of the fixture's IDX files and SHA256SUMS, as a user's directory."""
    source = root / name
    source.mkdir(parents=True)
    for path in (FIXTURES / "mnist").iterdir():
        shutil.copyfile(path, source / path.name)
    return source


def _changed_source(root: Path, name: str) -> Path:
    """The fixture with training image 7 inverted: a valid IDX file with other bytes,
    and SHA256SUMS rewritten for it (the user's own checksums of their files)."""
    source = _copy_source(root, name)
    images = source / f"{TRAIN_IMAGES}.gz"
    raw = bytearray(gzip.decompress(images.read_bytes()))
    start = 16 + 7 * 784  # the IDX header is 16 bytes; then 784 bytes per image
    raw[start : start + 784] = bytes(255 - b for b in raw[start : start + 784])
    images.write_bytes(gzip.compress(bytes(raw), mtime=0))
    lines = [
        f"{hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()}  {p.name[:-3]}"
        for p in sorted(source.glob("*.gz"))
    ]
    (source / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return source


def _expected_sha256(source: Path) -> dict[str, str]:
    """sha256 of each uncompressed IDX file, computed here (what SHA256SUMS states)."""
    return {
        p.name[: -len(".gz")]: hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
        for p in sorted(source.glob("*.gz"))
    }


def _tree_bytes(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` -> sha256 of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _manifest(root: Path, span: int) -> dict:
    return json.loads((span_dir(root, span) / "manifest.json").read_text(encoding="utf-8"))


def _config(tmp_path: Path, source: Path):
    from pipeline.config import RunConfig

    return RunConfig(dataset="mnist", data_dir=tmp_path / "data", source=str(source))


# ---------------------------------------------------------------- prepare_span


def test_same_files_reuse_the_span_and_other_files_become_the_next(tmp_path):
    from pipeline.local_runner import prepare_span

    original = _copy_source(tmp_path, "original")
    changed = _changed_source(tmp_path, "changed")
    config = _config(tmp_path, original)
    root = config.tfrecord_dir

    first = prepare_span(config)
    assert (first.span, first.written, first.reason) == (0, True, "there is no span yet")
    span0 = _tree_bytes(span_dir(root, 0))
    again = prepare_span(config)
    assert (again.span, again.written) == (0, False)
    assert list_spans(root) == [0]

    other = prepare_span(_config(tmp_path, changed))
    assert (other.span, other.written) == (1, True)
    assert other.reason == f"the source's sha256 differs from span 0's for {TRAIN_IMAGES}"
    assert list_spans(root) == [0, 1]
    assert _tree_bytes(span_dir(root, 0)) == span0  # span 0 untouched, manifest included
    assert _manifest(root, 0)["source_sha256"] == _expected_sha256(original)
    manifest = _manifest(root, 1)
    assert manifest["source_sha256"] == _expected_sha256(changed)
    assert manifest["span"] == 1
    assert manifest["written_by"] == "mnist-tfx run"
    assert manifest["written_because"] == other.reason
    assert _expected_sha256(changed)[TRAIN_IMAGES] != _expected_sha256(original)[TRAIN_IMAGES]
    # Back to the first files: they are not the latest span's, so a new span again.
    back = prepare_span(config)
    assert (back.span, back.written) == (2, True)
    assert _tree_bytes(span_dir(root, 0)) == span0
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_span_of_the_old_two_split_layout_counts_as_different(tmp_path):
    from pipeline.local_runner import prepare_span

    config = _config(tmp_path, FIXTURES / "mnist")
    root = config.tfrecord_dir
    prepare_span(config)
    # What a format-1 `convert` left: two splits, no span number, no validation record.
    legacy = _manifest(root, 0)
    counts = legacy["counts"]
    legacy.update(format_version=1, counts={"train": counts["train"], "eval": counts["test"]})
    for key in ("span", "validation", "written_by", "written_because"):
        legacy.pop(key)
    (span_dir(root, 0) / "manifest.json").write_text(json.dumps(legacy), encoding="utf-8")
    span0 = _tree_bytes(span_dir(root, 0))

    prepared = prepare_span(config)
    assert (prepared.span, prepared.written) == (1, True)
    assert "span 0 has the layout (format, splits, validation seed) (1, ('eval', 'train')" in (
        prepared.reason
    )
    assert _tree_bytes(span_dir(root, 0)) == span0
    assert set(_manifest(root, 1)["counts"]) == {"train", "validation", "test"}


def test_spans_added_by_ingest_stay_the_data(tmp_path):
    from pipeline.local_runner import prepare_span

    config = _config(tmp_path, _changed_source(tmp_path, "changed"))
    ingest_span(FIXTURES / "mnist", config.tfrecord_dir, "mnist", train_slice=(0, 120))
    span0 = _tree_bytes(span_dir(config.tfrecord_dir, 0))
    prepared = prepare_span(config)
    assert (prepared.span, prepared.written) == (0, False)
    assert list_spans(config.tfrecord_dir) == [0]
    assert _tree_bytes(span_dir(config.tfrecord_dir, 0)) == span0


def test_an_unfinished_span_directory_is_refused_not_replaced(tmp_path):
    root = tmp_path / "tfrecords"
    (root / "span-0" / "train").mkdir(parents=True)
    (root / "span-0" / "train" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"span-0: span 0 exists already; .* --span 1"):
        add_next_span(FIXTURES / "mnist", root, "mnist", {"written_by": "test"})
    assert (root / "span-0" / "train" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in root.iterdir()) == ["span-0"]


# ---------------------------------------------------------------- recorded lineage


def test_example_gen_records_the_spans_manifest_on_the_artifact(tmp_path):
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts

    from components.example_gen.executor import LINEAGE_FILE, record_data_lineage

    root = tmp_path / "tfrecords"
    ingest_span(FIXTURES / "mnist", root, "mnist")
    manifest_bytes = (span_dir(root, 0) / "manifest.json").read_bytes()
    artifact = standard_artifacts.Examples()
    artifact.uri = str(tmp_path / "ExampleGen" / "examples" / "3")
    Path(artifact.uri).mkdir(parents=True)
    config = example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name=name, pattern=f"span-0/{name}/*")
            for name in ("train", "validation", "test")
        ]
    )
    record_data_lineage(artifact, str(root), config, 0)

    expected = _expected_sha256(FIXTURES / "mnist")
    assert json.loads(artifact.get_string_custom_property("source_sha256")) == expected
    assert artifact.get_string_custom_property("dataset") == "mnist"
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    assert artifact.get_string_custom_property("manifest_sha256") == digest
    record = json.loads((Path(artifact.uri) / LINEAGE_FILE).read_text())
    assert record["span"] == 0
    assert record["manifest"] == json.loads(manifest_bytes)


def test_the_trainer_writes_its_training_sources_into_the_model(tmp_path):
    from components.example_gen.executor import LINEAGE_FILE
    from trainer.export import write_training_sources

    patterns = []
    for span, execution in ((4, 11), (3, 7)):
        artifact = tmp_path / "ExampleGen" / "examples" / str(execution)
        (artifact / "Split-train").mkdir(parents=True)
        manifest = {"dataset": "mnist", "source_sha256": {TRAIN_IMAGES: f"{span:064x}"}}
        record = {"span": span, "manifest_sha256": "ab" * 32, "manifest": manifest}
        (artifact / LINEAGE_FILE).write_text(json.dumps(record))
        patterns += [f"{artifact}/Split-train/*", f"{artifact}/Split-validation/*"]
    path = write_training_sources(str(tmp_path / "model"), patterns)
    assert path == str(tmp_path / "model" / "assets.extra" / "lineage" / "sources.json")
    sources = json.loads(Path(path).read_text())["sources"]
    assert [(s["span"], s["source_sha256"][TRAIN_IMAGES]) for s in sources] == [
        (3, f"{3:064x}"),
        (4, f"{4:064x}"),
    ]
    assert sources[0]["examples_uri"] == str(tmp_path / "ExampleGen" / "examples" / "7")
    with pytest.raises(ValueError, match=r"'nowhere/\*': expected <examples artifact>/Split-"):
        write_training_sources(str(tmp_path / "other"), ["nowhere/*"])


# ---------------------------------------------------------------- the real commands


def _convert(tmp_path: Path, source: Path):
    proc = run_cli(
        "convert",
        "--dataset",
        "mnist",
        "--source",
        str(source),
        "--data-dir",
        str(tmp_path / "data"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, fail_text(proc)
    return proc


@pytest.mark.slow
def test_convert_writes_a_span_only_for_new_files(tmp_path):
    root = tmp_path / "data" / "tfrecords" / "mnist"
    first = _convert(tmp_path, FIXTURES / "mnist")
    assert f"mnist: wrote span 0 in {root} (there is no span yet)" in first.stdout
    span0 = _tree_bytes(root / "span-0")
    second = _convert(tmp_path, FIXTURES / "mnist")
    assert f"mnist: nothing written; span 0 in {root} is the data" in second.stdout
    assert list_spans(root) == [0]
    assert _tree_bytes(root / "span-0") == span0

    changed = _changed_source(tmp_path, "changed")
    third = _convert(tmp_path, changed)
    assert (
        f"mnist: wrote span 1 in {root} (the source's sha256 differs from span 0's "
        f"for {TRAIN_IMAGES})" in third.stdout
    )
    assert list_spans(root) == [0, 1]
    assert _tree_bytes(root / "span-0") == span0
    assert _manifest(root, 1)["written_by"] == "mnist-tfx convert"
    assert _manifest(root, 1)["source_sha256"] == _expected_sha256(changed)


@pytest.mark.e2e
@pytest.mark.slow
def test_two_sources_two_spans_and_versions_keep_their_own_checksums(tmp_path):
    from pipeline.lineage import LINEAGE_FROM_PUSH

    original = _copy_source(tmp_path, "original")
    changed = _changed_source(tmp_path, "changed")
    root = tmp_path / "data" / "tfrecords" / "mnist"

    first = run_cli(*pipeline_args("mnist", tmp_path, "--source", str(original)), cwd=tmp_path)
    assert first.returncode == 0, fail_text(first)
    assert list_spans(root) == [0]
    span0 = _tree_bytes(root / "span-0")

    # One changed image may cost a test example or two against v1: the gate is not what
    # this test is about, so it allows a drop (the drift bounds stay the defaults).
    args = pipeline_args("mnist", tmp_path, "--source", str(changed), "--max-accuracy-drop", "0.2")
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, fail_text(second)
    assert f"wrote span 1 of {root} from {changed}" in second.stderr
    assert list_spans(root) == [0, 1]
    assert _tree_bytes(root / "span-0") == span0  # files and manifest byte-identical
    assert _manifest(root, 1)["source_sha256"] == _expected_sha256(changed)

    proc = run_cli(
        "versions",
        "--dataset",
        "mnist",
        "--output-root",
        str(tmp_path / "out"),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, fail_text(proc)
    # Versions are timestamps: v1 is the older push, v2 the newer.
    v2, v1 = json.loads(proc.stdout)
    assert v1["version"] < v2["version"]
    for row, source, span in ((v1, original, 0), (v2, changed, 1)):
        assert row["lineage_from"] == LINEAGE_FROM_PUSH, row
        assert row["source_sha256"] == _expected_sha256(source), row["version"]
        assert row["span"] == span
        assert [(s["span"], s["dataset"]) for s in row["training_sources"]] == [(span, "mnist")]
    assert (
        v1["source_sha256"][TRAIN_IMAGES]
        == hashlib.sha256(
            gzip.decompress((original / f"{TRAIN_IMAGES}.gz").read_bytes())
        ).hexdigest()
        != v2["source_sha256"][TRAIN_IMAGES]
    )
    # The pushed version carries the same record in its own files.
    serving = tmp_path / "out" / "serving" / "mnist"
    lineage_dir = serving / str(v2["version"]) / "assets.extra" / "lineage"
    sources = json.loads((lineage_dir / "sources.json").read_text())
    assert sources["sources"][0]["source_sha256"] == _expected_sha256(changed)

    table = run_cli(
        "versions",
        "--dataset",
        "mnist",
        "--output-root",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert table.returncode == 0, fail_text(table)
    new_digest = _expected_sha256(changed)[TRAIN_IMAGES]
    assert f"data {TRAIN_IMAGES} sha256 {new_digest}" in table.stdout
    assert f"(sha256 {LINEAGE_FROM_PUSH})" in table.stdout


# ---------------------------------------------------------------- versions' sources


def _lineage_store(push_sources: str | None):
    """A real in-memory ML Metadata store holding ExampleGen -> Examples (with the
    properties ExampleGen records) -> Trainer -> Model -> Pusher -> PushedModel
    (with ``training_sources`` when given). Returns (store, PushedModel artifact)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.fake_database.SetInParent()
    store = metadata_store.MetadataStore(config)

    def type_id(name: str, kind) -> int:
        put = store.put_artifact_type if kind is pb.ArtifactType else store.put_execution_type
        return put(kind(name=name))

    def artifact(type_name: str, **props) -> pb.Artifact:
        item = pb.Artifact(type_id=type_id(type_name, pb.ArtifactType), uri=f"/a/{type_name}")
        for name, value in props.items():
            field = "int_value" if isinstance(value, int) else "string_value"
            setattr(item.custom_properties[name], field, value)
        return item

    def execution(name: str, inputs: dict, outputs: dict) -> None:
        run = pb.Execution(type_id=type_id(name, pb.ExecutionType))
        events = []
        for kind, items in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for key, item in items.items():
                event = pb.Event(type=kind)
                event.path.steps.add().key = key
                events.append((item, event))
        store.put_execution(run, events, [])

    examples = artifact(
        "Examples",
        span=3,
        dataset="mnist",
        source_sha256=json.dumps({TRAIN_IMAGES: "e" * 64}),
    )
    [examples.id] = store.put_artifacts([examples])
    execution("ExampleGen", {}, {"examples": examples})
    model = artifact("Model")
    [model.id] = store.put_artifacts([model])
    execution("Trainer", {"examples": examples}, {"model": model})
    props = {"pushed": 1, "pushed_version": "5"}
    if push_sources is not None:
        props["training_sources"] = push_sources
    push = artifact("PushedModel", **props)
    [push.id] = store.put_artifacts([push])
    execution("Pusher", {"model": model}, {"pushed_model": push})
    return store, push


def test_versions_show_the_push_record_else_the_examples_record(tmp_path):
    from pipeline.lineage import (
        LINEAGE_FROM_EXAMPLES,
        LINEAGE_FROM_PUSH,
        format_versions,
        version_lineage,
    )

    (tmp_path / "5").mkdir()
    recorded = {
        "sources": [{"dataset": "mnist", "span": 3, "source_sha256": {TRAIN_IMAGES: "p" * 64}}]
    }
    store, push = _lineage_store(json.dumps(recorded))
    row = version_lineage(store, 5, str(tmp_path / "5"), push)
    assert (row.lineage_from, row.source_sha256) == (LINEAGE_FROM_PUSH, {TRAIN_IMAGES: "p" * 64})
    assert (row.span, row.training_spans, row.dataset) == (3, [3], "mnist")

    # Pushed before the Trainer wrote sources.json: ExampleGen's record, and said so.
    store, push = _lineage_store(None)
    row = version_lineage(store, 5, str(tmp_path / "5"), push)
    assert (row.lineage_from, row.source_sha256) == (
        LINEAGE_FROM_EXAMPLES,
        {TRAIN_IMAGES: "e" * 64},
    )
    assert row.training_sources == [
        {
            "dataset": "mnist",
            "span": 3,
            "source_sha256": {TRAIN_IMAGES: "e" * 64},
            "manifest_sha256": None,
        }
    ]
    text = format_versions([row])
    assert f"data {TRAIN_IMAGES} sha256 {'e' * 64}" in text
    assert f"(sha256 {LINEAGE_FROM_EXAMPLES})" in text

    # Neither: nothing is invented, and the table says so.
    row = version_lineage(store, 5, str(tmp_path / "5"), None)
    assert row.lineage_from is None and row.source_sha256 == {}
    assert "data sha256 not recorded for this version" in format_versions([row])
