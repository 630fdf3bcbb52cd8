"""End to end: the real ``mnist-tfx run`` (LocalDagRunner, SQLite ML Metadata, Beam
DirectRunner, every TFX component) on the committed fixture of real images, for
both datasets; then the cached re-run, an unblessed run and bad input.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ingest.convert import image_to_example
from ingest.datasets import get_dataset
from ingest.idx import read_idx_pair
from pipeline.pipeline import COMPONENT_ORDER
from tests.pipeline_fixture import FIXTURES, fail_text, listing, pipeline_args, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class PipelineRun:
    """Two runs of one pipeline on unchanged data. The second finds the first's model
    served; the run that made it already checked these examples and this model, so
    the baseline resolvers hand the validator and the Evaluator the baselines they had
    then and the whole run is answered from TFX's cache."""

    def __init__(self, dataset: str, root: Path) -> None:
        self.dataset = dataset
        self.root = root
        # The first run's temporary files go to a directory of their own, to see what
        # the run leaves behind there.
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir()
        self.first, self.first_summary = self._run("first", TMPDIR=str(self.tmpdir))
        self.serving_listing_after_first = listing(self.serving_dir)
        self.second, self.second_summary = self._run("second")

    def _run(self, name: str, **env: str) -> tuple[subprocess.CompletedProcess, dict | None]:
        summary_path = self.root / f"{name}.json"
        proc = run_cli(
            *pipeline_args(self.dataset, self.root, "--summary-json", str(summary_path)),
            cwd=self.root,
            **env,
        )
        return proc, _load(summary_path)

    @property
    def metadata(self) -> Path:
        return self.root / "out" / f"{self.dataset}_cnn" / "metadata.sqlite"

    @property
    def serving_dir(self) -> Path:
        return self.root / "out" / "serving" / self.dataset


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture(scope="module", params=["mnist", "fashion_mnist"])
def pipeline_run(request, tmp_path_factory) -> PipelineRun:
    root = tmp_path_factory.mktemp(request.param)
    return PipelineRun(request.param, root)


RESOLVERS = ("served_model_data_resolver", "served_model_resolver")


def _components(summary: dict, state: bool = False) -> list:
    rows = [c for c in summary["components"] if c["name"] not in RESOLVERS]
    return [c["state"] if state else c["name"] for c in rows]


def test_first_run_completes_every_component_once(pipeline_run):
    assert pipeline_run.first.returncode == 0, fail_text(pipeline_run.first)
    summary = pipeline_run.first_summary
    assert _components(summary) == list(COMPONENT_ORDER)
    assert {c["state"] for c in summary["components"]} == {"COMPLETE"}
    # The baseline resolvers ran too (they found no served model yet).
    names = [c["name"] for c in summary["components"]]
    assert all(resolver in names for resolver in RESOLVERS)

    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(pipeline_run.metadata)
    store = metadata_store.MetadataStore(config)
    pipeline_name = f"{pipeline_run.dataset}_cnn"
    for component in COMPONENT_ORDER:
        node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component}")
        assert node is not None, component
        executions = sorted(store.get_executions_by_context(node.id), key=lambda e: e.id)
        states = [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in executions]
        assert states == ["COMPLETE", "CACHED"], (component, states)


def test_beam_components_build_no_tfx_package(pipeline_run):
    # With the DirectRunner, TFX's Beam executors would each copy TFX and run
    # `setup.py sdist` on it into a new temp dir (tfx_ephemeral, ~49 MB, never
    # deleted); the local runner's --setup_file stops that (pipeline/beam_runners.py).
    assert pipeline_run.first.returncode == 0, fail_text(pipeline_run.first)
    left = sorted(
        str(p.relative_to(pipeline_run.tmpdir)) for p in pipeline_run.tmpdir.glob("*/build/tfx")
    )
    assert left == [], left
    assert "tfx_ephemeral" not in pipeline_run.first.stderr
    # Nor does Beam try the Prism runner first (pipeline/direct_runner.py), whose
    # environment would stage an sdist of this project into a temp dir of its own.
    sdists = sorted(str(p) for p in pipeline_run.tmpdir.glob("*/mnist_tfx-*.tar.gz"))
    assert sdists == [], sdists
    assert "No module named build" not in pipeline_run.first.stderr


def test_summary_counts_accuracy_and_blessing(pipeline_run):
    summary = pipeline_run.first_summary
    assert summary["example_counts"] == {"train": 275, "validation": 25, "test": 200}
    assert summary["blessed"] is True
    assert 0.4 <= summary["accuracy"] <= 1.0
    per_class = {int(k): v for k, v in summary["per_class_accuracy"].items()}
    counts = {int(k): v for k, v in summary["per_class_count"].items()}
    assert sorted(per_class) == list(range(10))
    assert counts == {label: 20 for label in range(10)}
    # TFMA's overall accuracy is the count-weighted mean of its per-class slices.
    weighted = sum(per_class[k] * counts[k] for k in per_class) / sum(counts.values())
    assert weighted == pytest.approx(summary["accuracy"], abs=1e-6)
    assert summary["training"]["train_examples"] == 275
    assert summary["training"]["validation_examples"] == 25
    assert summary["training"]["epochs"] == 3
    names = get_dataset(pipeline_run.dataset).class_names
    for name in names:
        assert name in pipeline_run.first.stdout
    assert "BLESSED" in pipeline_run.first.stdout


def _first_execution_artifacts(store, pipeline_name: str, component: str, kind: str):
    """The artifacts (outputs or inputs) of a component's first execution, by key."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.run_summary import output_artifacts

    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component}")
    execution = min(store.get_executions_by_context(node.id), key=lambda e: e.id)
    kinds = {
        "outputs": (metadata_store_pb2.Event.OUTPUT,),
        "inputs": (metadata_store_pb2.Event.INPUT,),
    }[kind]
    return execution, output_artifacts(store, execution.id, kinds)


def test_three_splits_train_on_train_validate_on_validation_gate_on_test(pipeline_run):
    """ExampleGen imports Split-train/Split-validation/Split-test (275/25/200 from the
    fixture's 300 training and 200 test images); the Trainer validates on the 25, the
    Evaluator measures the 200 official test images and nothing else."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(pipeline_run.metadata)
    store = metadata_store.MetadataStore(config)
    name = f"{pipeline_run.dataset}_cnn"

    _, outputs = _first_execution_artifacts(store, name, "ExampleGen", "outputs")
    examples = outputs["examples"][0]
    split_names = artifact_utils.decode_split_names(examples.properties["split_names"].string_value)
    assert split_names == ["train", "validation", "test"]
    counts = {}
    for split in split_names:
        files = sorted(tf.io.gfile.glob(f"{examples.uri}/Split-{split}/*"))
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
        counts[split] = sum(1 for _ in dataset)
    assert counts == {"train": 275, "validation": 25, "test": 200}

    _, trainer_outputs = _first_execution_artifacts(store, name, "Trainer", "outputs")
    stats_path = Path(trainer_outputs["model_run"][0].uri) / "training_stats.json"
    stats = json.loads(stats_path.read_text())
    assert (stats["train_examples"], stats["validation_examples"]) == (275, 25)
    assert len(stats["history"]["val_loss"]) == 3  # validated on validation every epoch

    evaluator, evaluator_outputs = _first_execution_artifacts(store, name, "Evaluator", "outputs")
    splits_property = evaluator.custom_properties["example_splits"].string_value
    assert json.loads(splits_property) == ["test"]
    evaluation_uri = evaluator_outputs["evaluation"][0].uri
    result = tfma.load_eval_result(evaluation_uri)
    overall = next(metrics for key, metrics in result.slicing_metrics if not key)
    assert overall[""][""]["example_count"]["doubleValue"] == 200


def test_every_run_links_its_evaluation_report(pipeline_run):
    report = Path(pipeline_run.first_summary["report_path"])
    assert report.name == "index.html" and report.is_file()
    assert f"report: {report.resolve().as_uri()}" in pipeline_run.first.stdout
    facts = json.loads((report.parent / "report.json").read_text())
    assert json.dumps(facts).count(pipeline_run.first_summary["pushed_version"]) >= 1
    html = report.read_text()
    assert "http://" not in html and "https://" not in html
    for name in get_dataset(pipeline_run.dataset).class_names:
        assert name.replace("/", "&#x2F;") in html or name in html


def test_pushed_model_is_one_loadable_version(pipeline_run):
    import tensorflow as tf

    versions = [p for p in pipeline_run.serving_dir.iterdir()]
    assert len(versions) == 1 and versions[0].name.isdigit(), versions
    assert str(versions[0]) == pipeline_run.first_summary["pushed_path"]
    assert versions[0].name == pipeline_run.first_summary["pushed_version"]
    model = tf.saved_model.load(str(versions[0]))
    assert {
        "serving_default",
        "predict_images",
        "predict_pixels",
        "predict_pixels_uint8",
        "classify",
    } <= set(model.signatures)

    images, labels = read_idx_pair(
        FIXTURES / pipeline_run.dataset / "t10k-images-idx3-ubyte.gz",
        FIXTURES / pipeline_run.dataset / "t10k-labels-idx1-ubyte.gz",
    )
    examples = [
        image_to_example(img, int(lbl)).SerializeToString()
        for img, lbl in zip(images, labels, strict=True)
    ]
    by_example = model.signatures["serving_default"](examples=tf.constant(examples))
    by_pixels = model.signatures["predict_pixels"](images=tf.constant(images, tf.float32))
    by_flat = model.signatures["predict_pixels_uint8"](images=tf.constant(images.reshape(-1, 784)))
    for out in (by_example, by_pixels, by_flat):
        probabilities = out["probabilities"].numpy()
        assert probabilities.shape == (200, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(out["classes"].numpy(), probabilities.argmax(axis=1))
    np.testing.assert_allclose(by_example["probabilities"], by_pixels["probabilities"], atol=1e-6)
    np.testing.assert_allclose(by_example["probabilities"], by_flat["probabilities"], atol=1e-6)
    # TF Serving's MNIST contract: float32 [N, 784] pixels / 255 in, scores out.
    unit = images.reshape(-1, 784).astype(np.float32) * np.float32(1 / 255)
    by_contract = model.signatures["predict_images"](images=tf.constant(unit))
    np.testing.assert_allclose(by_example["probabilities"], by_contract["scores"], atol=1e-6)
    # The pushed model is the one the Evaluator measured.
    accuracy = float((by_example["classes"].numpy() == labels).mean())
    assert accuracy == pytest.approx(pipeline_run.first_summary["accuracy"], abs=1e-6)


def test_second_run_is_answered_from_the_cache_and_pushes_nothing(pipeline_run):
    assert pipeline_run.second.returncode == 0, fail_text(pipeline_run.second)
    summary = pipeline_run.second_summary
    assert _components(summary) == list(COMPONENT_ORDER)
    assert _components(summary, state=True) == ["CACHED"] * len(COMPONENT_ORDER)
    assert summary["blessed"] is True
    assert summary["push_cached"] is True
    assert summary["pushed_version"] == pipeline_run.first_summary["pushed_version"]
    assert summary["accuracy"] == pipeline_run.first_summary["accuracy"]
    assert "pushed: nothing new; Pusher cached, version" in pipeline_run.second.stdout
    assert listing(pipeline_run.serving_dir) == pipeline_run.serving_listing_after_first


def test_unblessed_model_is_not_pushed(tmp_path_factory):
    root = tmp_path_factory.mktemp("unblessed")
    args = pipeline_args("mnist", root, "--epochs", "1", "--min-accuracy", "0.999")
    proc = run_cli(*args, cwd=root)
    assert proc.returncode == 3, fail_text(proc)
    assert "did not bless" in proc.stderr
    assert "overall: accuracy" in proc.stderr and "is below the floor 0.9990" in proc.stderr
    assert "NOT blessed" in proc.stdout
    serving = root / "out" / "serving" / "mnist"
    assert not serving.exists() or list(serving.iterdir()) == []


def test_bad_input_stops_before_anything_is_written(tmp_path):
    source = tmp_path / "bad"
    source.mkdir()
    for f in (FIXTURES / "mnist").iterdir():
        if f.suffix == ".gz":
            (source / f.name).write_bytes(f.read_bytes())
    # Real bytes, wrong content: the manifest no longer matches this label file.
    (source / "train-labels-idx1-ubyte.gz").write_bytes(
        (FIXTURES / "fashion_mnist" / "train-labels-idx1-ubyte.gz").read_bytes()
    )
    (source / "SHA256SUMS").write_text((FIXTURES / "mnist" / "SHA256SUMS").read_text())
    proc = run_cli(*pipeline_args("mnist", tmp_path, "--source", str(source)), cwd=tmp_path)
    assert proc.returncode == 2, fail_text(proc)
    assert "train-labels-idx1-ubyte" in proc.stderr and "sha256" in proc.stderr.lower()
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "data" / "tfrecords" / "mnist").exists()


def test_worse_candidate_than_baseline_is_refused(pipeline_run):
    """A model trained for 2 steps is judged against the blessed one: refused, nothing pushed."""
    before = listing(pipeline_run.serving_dir)
    bytes_before = {
        p: (pipeline_run.serving_dir / p).read_bytes()
        for p in before
        if (pipeline_run.serving_dir / p).is_file()
    }
    proc = run_cli(
        *pipeline_args(
            pipeline_run.dataset,
            pipeline_run.root,
            "--epochs",
            "1",
            "--param",
            "max_steps=2",
            "--min-accuracy",
            "0",
        ),
        cwd=pipeline_run.root,
    )
    assert proc.returncode == 3, fail_text(proc)
    assert "fell below the served model's" in proc.stderr
    assert "baseline" in proc.stderr and "allowed change >= -0.0000" in proc.stderr
    assert listing(pipeline_run.serving_dir) == before
    assert {p: (pipeline_run.serving_dir / p).read_bytes() for p in bytes_before} == bytes_before


def test_versions_lists_the_push_with_its_lineage(pipeline_run):
    proc = run_cli(
        "versions",
        "--dataset",
        pipeline_run.dataset,
        "--output-root",
        str(pipeline_run.root / "out"),
        "--json",
        cwd=pipeline_run.root,
    )
    assert proc.returncode == 0, fail_text(proc)
    (row,) = json.loads(proc.stdout)
    first = pipeline_run.first_summary
    assert str(row["version"]) == first["pushed_version"]
    assert row["accuracy"] == pytest.approx(first["accuracy"])
    assert row["blessed"] is True
    assert (row["dataset"], row["model"]) == (pipeline_run.dataset, "cnn_model_fn")
    assert row["hparams"]["epochs"] == 3 and row["hparams"]["batch_size"] == 50
    sums = (FIXTURES / pipeline_run.dataset / "SHA256SUMS").read_text().split()
    assert row["source_sha256"] == dict(zip(sums[1::2], sums[0::2], strict=True))
    assert set(row["mlmd_ids"]) == {
        "pushed_model_artifact",
        "pusher_execution",
        "evaluator_execution",
        "model_artifact",
        "trainer_execution",
        "examples_artifact",
        "examplegen_execution",
    }


def test_rollback_restores_an_earlier_version_with_its_lineage(pipeline_run, tmp_path):
    """On a copy of the run's output: a second version appears (a model pushed from
    elsewhere), `rollback` publishes the pipeline's version again as a newer one,
    and `versions` shows it with the lineage of the version it restores."""
    import shutil

    from serving.publish import list_versions, publish_saved_model, tree_digest

    out = tmp_path / "out"
    shutil.copytree(pipeline_run.root / "out", out)
    base = out / "serving" / pipeline_run.dataset
    (first,) = list_versions(base)
    other = tmp_path / "other_model"
    shutil.copytree(base / str(first), other)
    (other / "assets.extra" / "from_elsewhere").write_text("a different model")
    second, _ = publish_saved_model(other, base)

    proc = run_cli(
        "rollback", "--dataset", pipeline_run.dataset, "--output-root", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, fail_text(proc)
    third = list_versions(base)[-1]
    assert list_versions(base) == [first, second, third]
    assert f"version {third} now serves the model of version {first}" in proc.stdout
    assert tree_digest(base / str(third)) == tree_digest(base / str(first))

    proc = run_cli(
        "versions",
        "--dataset",
        pipeline_run.dataset,
        "--output-root",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, fail_text(proc)
    rows = {row["version"]: row for row in json.loads(proc.stdout)}
    assert rows[third]["rollback_of"] == first
    assert rows[third]["accuracy"] == pytest.approx(pipeline_run.first_summary["accuracy"])
    assert rows[third]["mlmd_ids"] == rows[first]["mlmd_ids"]
    assert rows[second]["mlmd_ids"] == {} and rows[second]["rollback_of"] is None

    proc = run_cli(
        "rollback",
        "--dataset",
        pipeline_run.dataset,
        "--output-root",
        str(out),
        "--to",
        "7",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert f"no version 7; versions present: [{first}, {second}, {third}]" in proc.stderr
