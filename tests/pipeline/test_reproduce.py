"""``mnist-tfx reproduce`` for real on the fixture: two models, one dataset, a few
steps each, through the real pipeline; then the table and its files, and the
``--model`` flag of ``run`` naming its own pipeline and serving base path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import RunConfig
from tests.pipeline_fixture import FIXTURES, fail_text, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_reproduce_two_models_writes_the_table(tmp_path: Path):
    out = tmp_path / "reproduce"
    proc = run_cli(
        "reproduce",
        "--models",
        "softmax,deep_cnn",
        "--datasets",
        "mnist",
        "--output-root",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
        "--source-dir",
        f"mnist={FIXTURES / 'mnist'}",
        "--param",
        "max_steps=4",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, fail_text(proc)
    rows = json.loads((out / "reproduction.json").read_text())
    assert [(r["model"], r["dataset"]) for r in rows] == [
        ("softmax", "mnist"),
        ("deep_cnn", "mnist"),
    ]
    softmax, deep_cnn = rows
    assert softmax["tutorial_accuracy"] == pytest.approx(0.92)
    assert deep_cnn["tutorial_accuracy"] == pytest.approx(0.992)
    for row in rows:
        assert row["steps"] == 4
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["pipeline_name"] == f"reproduce_mnist_{row['model']}"
        # Each model is its own pipeline with its own store and serving base path.
        assert (out / row["pipeline_name"] / "metadata.sqlite").is_file()
        pushed = out / "serving" / f"mnist_{row['model']}" / row["pushed_version"]
        assert (pushed / "saved_model.pb").is_file()
    # softmax's and deep_cnn's batch sizes come from their own tutorials
    assert (softmax["batch_size"], deep_cnn["batch_size"]) == (100, 50)

    table = (out / "reproduction.md").read_text()
    assert table in proc.stdout
    lines = table.splitlines()
    assert lines[0].startswith("| model | dataset | tutorial's number | ours |")
    assert lines[2].startswith("| softmax | mnist | 92.00% | ")
    assert lines[3].startswith("| deep_cnn | mnist | 99.20% | ")
    assert "- `deep_cnn` (Deep MNIST for Experts;" in table


def test_reproduce_rejects_unknown_names(tmp_path: Path):
    proc = run_cli("reproduce", "--models", "resnet", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--models resnet: unknown model 'resnet'" in proc.stderr
    proc = run_cli("reproduce", "--source-dir", "cifar=/tmp", cwd=tmp_path)
    assert proc.returncode == 2
    assert "expected DATASET=DIR" in proc.stderr


def test_model_flag_names_its_own_pipeline_and_serving_path():
    default = RunConfig(dataset="mnist")
    assert (default.name, default.serving_model_dir.name) == ("mnist_cnn", "mnist")
    mlp = RunConfig(dataset="fashion_mnist", hparams={"model": "mlp"})
    assert (mlp.name, mlp.serving_model_dir.name) == ("fashion_mnist_mlp", "fashion_mnist_mlp")
