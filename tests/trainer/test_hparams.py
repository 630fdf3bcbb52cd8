"""Tests of trainer/hparams.py: defaults, validation, overrides, CLI parsing and the
per-model defaults table (MODEL_DEFAULTS, hparams_for_model)."""

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.hparams import (
    KERNEL_INITIALIZERS,
    MODEL_DEFAULTS,
    OPTIMIZERS,
    HParams,
    hparams_for_model,
    hparams_from_overrides,
    parse_override,
)

FIELD_NAMES = sorted(f.name for f in dataclasses.fields(HParams))


def test_defaults_validate_and_have_documented_values():
    """The defaults are valid and are the documented run settings."""
    hparams = HParams()
    assert hparams.validate() is hparams
    assert hparams.to_params() == {
        "model": "cnn_model_fn",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "final_learning_rate_fraction": 0.05,
        "warmup_fraction": 0.0,
        "batch_size": 100,
        "epochs": 3,
        "max_steps": 0,
        "dropout_rate": 0.4,
        "kernel_initializer": "glorot_uniform",
        "kernel_init_stddev": 0.1,
        "bias_init_value": 0.0,
        "augment_shift": 0,
        "precision": "auto",
        "seed": 42,
        "in_memory": True,
        "validate_every_epoch": True,
        "steps_per_execution": 25,
    }


def test_hparams_are_frozen():
    """HParams is immutable; overrides make copies."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        HParams().batch_size = 5  # type: ignore[misc]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_known_optimizer_validates(optimizer):
    """Each name in OPTIMIZERS is accepted."""
    assert HParams(optimizer=optimizer).validate().optimizer == optimizer


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"optimizer": "adagrad"},
            r"^hparams\.optimizer: expected one of .*'adam'.*, got 'adagrad'$",
        ),
        ({"learning_rate": 0.0}, r"^hparams\.learning_rate: expected a value > 0, got 0\.0$"),
        ({"learning_rate": -0.1}, r"^hparams\.learning_rate: expected a value > 0, got -0\.1$"),
        (
            {"learning_rate": float("nan")},
            r"^hparams\.learning_rate: expected a value > 0, got nan$",
        ),
        ({"batch_size": 0}, r"^hparams\.batch_size: expected a value > 0, got 0$"),
        ({"epochs": 0}, r"^hparams\.epochs: expected a value > 0, got 0$"),
        ({"max_steps": -1}, r"^hparams\.max_steps: expected >= 0, got -1$"),
        ({"dropout_rate": 1.0}, r"^hparams\.dropout_rate: expected 0 <= rate < 1, got 1\.0$"),
        ({"dropout_rate": -0.1}, r"^hparams\.dropout_rate: expected 0 <= rate < 1, got -0\.1$"),
        (
            {"final_learning_rate_fraction": 1.5},
            r"^hparams\.final_learning_rate_fraction: expected 0\.\.1, got 1\.5$",
        ),
        (
            {"model": "lenet"},
            r"^hparams\.model: unknown model 'lenet'; registered: "
            r"\['cnn_model_fn', 'deep_cnn', 'mlp', 'softmax'\]$",
        ),
        (
            {"kernel_initializer": "he_normal"},
            r"^hparams\.kernel_initializer: expected one of \('glorot_uniform', 'zeros', "
            r"'truncated_normal'\), got 'he_normal'$",
        ),
        (
            {"kernel_init_stddev": 0.0},
            r"^hparams\.kernel_init_stddev: expected a value > 0, got 0\.0$",
        ),
        (
            {"bias_init_value": float("nan")},
            r"^hparams\.bias_init_value: expected a finite number, got nan$",
        ),
        (
            {"bias_init_value": float("inf")},
            r"^hparams\.bias_init_value: expected a finite number, got inf$",
        ),
        (
            {"precision": "fp16"},
            r"^hparams\.precision: expected one of \('auto', 'fp32', 'bf16'\), got 'fp16'$",
        ),
        (
            {"warmup_fraction": 1.0},
            r"^hparams\.warmup_fraction: expected 0 <= fraction < 1, got 1\.0$",
        ),
        (
            {"warmup_fraction": -0.1},
            r"^hparams\.warmup_fraction: expected 0 <= fraction < 1, got -0\.1$",
        ),
        (
            {"augment_shift": 5},
            r"^hparams\.augment_shift: expected 0\.\.4 pixels, got 5$",
        ),
        (
            {"augment_shift": -1},
            r"^hparams\.augment_shift: expected 0\.\.4 pixels, got -1$",
        ),
        (
            {"model": "softmax"},
            r"^hparams\.dropout_rate: model 'softmax' has no dropout layer, so expected 0, "
            r"got 0\.4 \(hparams_for_model\('softmax'\) starts from its own defaults\)$",
        ),
        (
            {"model": "mlp", "dropout_rate": 0.2},
            r"^hparams\.dropout_rate: model 'mlp' has no dropout layer, so expected 0, got 0\.2",
        ),
    ],
)
def test_invalid_field_raises_naming_it(changes, message):
    """Each invalid value raises ValueError naming the field and the value."""
    with pytest.raises(ValueError, match=message):
        HParams(**changes).validate()


@pytest.mark.parametrize(
    "changes",
    [
        {"dropout_rate": 0.0},
        {"max_steps": 0},
        {"max_steps": 1},
        {"final_learning_rate_fraction": 0.0},
        {"final_learning_rate_fraction": 1.0},
        {"seed": None},
        {"batch_size": 1, "epochs": 1, "learning_rate": 1e-9},
        {"model": "softmax", "dropout_rate": 0.0},
        {"model": "deep_cnn", "dropout_rate": 0.0},
        {"kernel_initializer": "zeros", "bias_init_value": -1.5},
        {"kernel_initializer": "truncated_normal", "kernel_init_stddev": 1e-6},
        {"precision": "fp32"},
        {"precision": "bf16"},
        {"warmup_fraction": 0.5},
        {"augment_shift": 4},
    ],
)
def test_boundary_values_are_valid(changes):
    """Values on the inclusive edge of each range are accepted."""
    HParams(**changes).validate()


def test_with_overrides_returns_validated_copy():
    """with_overrides applies the values to a copy and leaves the original alone."""
    base = HParams()
    changed = base.with_overrides({"batch_size": 32, "optimizer": "sgd", "seed": None})
    assert (changed.batch_size, changed.optimizer, changed.seed) == (32, "sgd", None)
    assert (base.batch_size, base.optimizer, base.seed) == (100, "adam", 42)
    assert base.with_overrides({}) == base


def test_with_overrides_unknown_name_lists_known_names():
    """Unknown names raise ValueError listing the unknown and every known name."""
    with pytest.raises(ValueError) as error:
        HParams().with_overrides({"batchsize": 3, "lr": 0.1, "epochs": 2})
    assert (
        str(error.value) == f"unknown hyperparameter(s) ['batchsize', 'lr']; known: {FIELD_NAMES}"
    )


def test_with_overrides_validates_new_values():
    """An override to an invalid value is refused."""
    with pytest.raises(ValueError, match=r"^hparams\.epochs: expected a value > 0, got 0$"):
        HParams().with_overrides({"epochs": 0})


def test_from_params_round_trips_and_ignores_extra_keys():
    """from_params(to_params()) is the identity; keys such as total_steps are ignored."""
    hparams = HParams(batch_size=7, optimizer="rmsprop", seed=None, in_memory=False)
    params = {**hparams.to_params(), "total_steps": 1234, "class_names": ["a"]}
    assert HParams.from_params(params) == hparams
    assert HParams.from_params({}) == HParams()


def test_from_params_validates():
    """from_params refuses invalid values."""
    with pytest.raises(ValueError, match=r"^hparams\.batch_size: expected a value > 0, got -3$"):
        HParams.from_params({"batch_size": -3})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("batch_size=32", ("batch_size", 32)),
        (" epochs = 5", ("epochs", 5)),
        ("max_steps=0", ("max_steps", 0)),
        ("learning_rate=3e-4", ("learning_rate", 3e-4)),
        ("dropout_rate=0", ("dropout_rate", 0.0)),
        ("final_learning_rate_fraction=1", ("final_learning_rate_fraction", 1.0)),
        ("seed=7", ("seed", 7)),
        ("seed=None", ("seed", None)),
        ("seed=none", ("seed", None)),
        ("seed=", ("seed", None)),
        ("in_memory=false", ("in_memory", False)),
        ("in_memory=True", ("in_memory", True)),
        ("in_memory=1", ("in_memory", True)),
        ("validate_every_epoch=no", ("validate_every_epoch", False)),
        ("validate_every_epoch=YES", ("validate_every_epoch", True)),
        ("optimizer=sgd", ("optimizer", "sgd")),
        ("precision=bf16", ("precision", "bf16")),
        ("warmup_fraction=0.1", ("warmup_fraction", 0.1)),
        ("augment_shift=2", ("augment_shift", 2)),
        ("model=cnn_model_fn", ("model", "cnn_model_fn")),
        ("model=a=b", ("model", "a=b")),
        ("kernel_initializer=zeros", ("kernel_initializer", "zeros")),
        ("kernel_init_stddev=0.05", ("kernel_init_stddev", 0.05)),
        ("bias_init_value=-0.1", ("bias_init_value", -0.1)),
    ],
)
def test_parse_override_types(text, expected):
    """Values are converted to the type of their field."""
    name, value = parse_override(text)
    assert (name, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_size", r"^--param 'batch_size': expected name=value$"),
        ("batchsize=3", r"^--param 'batchsize=3': unknown hyperparameter 'batchsize'; known: \["),
        ("batch_size=3.5", r"^--param 'batch_size=3\.5': batch_size expects int, got '3\.5'$"),
        ("batch_size=", r"^--param 'batch_size=': batch_size expects int, got ''$"),
        ("epochs=three", r"^--param 'epochs=three': epochs expects int, got 'three'$"),
        (
            "learning_rate=fast",
            r"^--param 'learning_rate=fast': learning_rate expects float, got 'fast'$",
        ),
        ("seed=abc", r"^--param 'seed=abc': seed expects int \| None, got 'abc'$"),
        ("in_memory=maybe", r"^--param 'in_memory=maybe': in_memory expects bool, got 'maybe'$"),
    ],
)
def test_parse_override_errors(text, message):
    """Malformed, unknown or mistyped overrides raise ValueError saying which and why."""
    with pytest.raises(ValueError, match=message):
        parse_override(text)


def test_parse_override_unknown_lists_every_field():
    """The unknown-name error lists all hyperparameter names."""
    with pytest.raises(ValueError) as error:
        parse_override("lr=0.1")
    assert str(error.value).endswith(f"known: {FIELD_NAMES}")


def test_parsed_overrides_feed_with_overrides():
    """parse_override output is what with_overrides takes (the CLI path)."""
    overrides = dict(parse_override(t) for t in ["batch_size=64", "seed=none", "in_memory=0"])
    hparams = HParams().with_overrides(overrides)
    assert (hparams.batch_size, hparams.seed, hparams.in_memory) == (64, None, False)


# What each registered model runs by default: the HParams fields that differ from HParams().
EXPECTED_DEFAULTS = {
    "softmax": {
        "model": "softmax",
        "optimizer": "sgd",
        "learning_rate": 0.5,
        "final_learning_rate_fraction": 1.0,
        "batch_size": 100,
        "epochs": 2,
        "max_steps": 1000,
        "dropout_rate": 0.0,
        "kernel_initializer": "zeros",
    },
    "mlp": {
        "model": "mlp",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "final_learning_rate_fraction": 1.0,
        "batch_size": 32,
        "epochs": 5,
        "dropout_rate": 0.0,
    },
    "deep_cnn": {
        "model": "deep_cnn",
        "learning_rate": 1e-4,
        "final_learning_rate_fraction": 1.0,
        "batch_size": 50,
        "epochs": 5,
        "dropout_rate": 0.5,
        "kernel_initializer": "truncated_normal",
        "kernel_init_stddev": 0.1,
        "bias_init_value": 0.1,
    },
    "cnn_model_fn": {},
}
# The tutorials' own settings where they differ from the defaults above.
EXPECTED_TUTORIAL_CHANGES = {
    "softmax": {},
    "mlp": {},
    "deep_cnn": {"epochs": 17, "max_steps": 20_000},
    "cnn_model_fn": {
        "optimizer": "sgd",
        "learning_rate": 1e-3,
        "final_learning_rate_fraction": 1.0,
        "epochs": 34,
        "max_steps": 20_000,
    },
}
EXPECTED_HEADLINES = {
    "softmax": ("mnist", 0.92, "about 92% (a 2019 re-run printed 0.9167)"),
    "mlp": ("fashion_mnist", 0.876, "87.6%"),
    "deep_cnn": ("mnist", 0.992, "99.2%"),
    "cnn_model_fn": ("mnist", 0.973, "97.3% with the tutorial's settings"),
}
MNIST_TRAIN_EXAMPLES = 60_000
REGISTERED = "['cnn_model_fn', 'deep_cnn', 'mlp', 'softmax']"


def test_table_lists_the_four_tutorial_models_in_issue_order():
    """MODEL_DEFAULTS has the four models, in the order of the reproduction table."""
    assert list(MODEL_DEFAULTS) == ["softmax", "mlp", "deep_cnn", "cnn_model_fn"]


@pytest.mark.parametrize("model", list(EXPECTED_DEFAULTS))
def test_model_defaults_are_the_documented_settings(model):
    """Each model's defaults are HParams() with exactly the documented fields changed."""
    entry = MODEL_DEFAULTS[model]
    assert entry.hparams == dataclasses.replace(HParams(), **EXPECTED_DEFAULTS[model])
    assert entry.hparams.validate() is entry.hparams
    assert hparams_for_model(model) == entry.hparams
    assert hparams_for_model(model, {}) == entry.hparams


@pytest.mark.parametrize("model", list(EXPECTED_TUTORIAL_CHANGES))
def test_tutorial_settings(model):
    """tutorial=True gives the tutorial's own settings (deep_cnn's and cnn_model_fn's
    20,000 steps; the two small models' defaults are their tutorials' settings)."""
    entry = MODEL_DEFAULTS[model]
    expected = dataclasses.replace(entry.hparams, **EXPECTED_TUTORIAL_CHANGES[model])
    assert entry.tutorial_hparams == expected
    assert hparams_for_model(model, tutorial=True) == expected
    assert expected.validate() is expected


@pytest.mark.parametrize("model", list(MODEL_DEFAULTS))
def test_tutorial_epochs_just_reach_max_steps(model):
    """On the 60,000 training images, the tutorial settings' epochs hold max_steps
    with less than one epoch to spare (fit stops at max_steps)."""
    tutorial = MODEL_DEFAULTS[model].tutorial_hparams
    steps_per_epoch = MNIST_TRAIN_EXAMPLES // tutorial.batch_size
    if tutorial.max_steps:
        assert (tutorial.epochs - 1) * steps_per_epoch < tutorial.max_steps
        assert tutorial.epochs * steps_per_epoch >= tutorial.max_steps
    expected_steps = {"softmax": 1000, "mlp": 5 * 1875, "deep_cnn": 20_000, "cnn_model_fn": 20_000}
    steps = min(tutorial.epochs * steps_per_epoch, tutorial.max_steps or math.inf)
    assert steps == expected_steps[model]


@pytest.mark.parametrize("model", list(EXPECTED_HEADLINES))
def test_table_records_dataset_headline_and_description(model):
    """Each entry names its tutorial, dataset and headline accuracy, and says what is run."""
    entry = MODEL_DEFAULTS[model]
    dataset, accuracy, headline_text = EXPECTED_HEADLINES[model]
    assert (entry.dataset, entry.headline_accuracy) == (dataset, accuracy)
    assert headline_text in entry.headline
    assert entry.tutorial and entry.description
    assert "\n" not in entry.description
    assert entry.has_dropout == (entry.hparams.dropout_rate > 0)


def test_deep_cnn_description_says_what_is_run_and_why():
    """The scaled-down deep_cnn run is recorded with the tutorial's step count."""
    description = MODEL_DEFAULTS["deep_cnn"].description
    assert "5 epochs (5,500 steps of the 55,000 training images) instead of 20,000" in description
    assert MODEL_DEFAULTS["deep_cnn"].hparams.epochs * MNIST_TRAIN_EXAMPLES // 50 == 6000


def test_hparams_for_model_applies_overrides_to_the_models_defaults():
    """Overrides change only the named fields of the model's own defaults."""
    hparams = hparams_for_model(
        "deep_cnn", {"dropout_rate": 0.25, "epochs": 1, "model": "deep_cnn"}
    )
    assert hparams == dataclasses.replace(
        MODEL_DEFAULTS["deep_cnn"].hparams, dropout_rate=0.25, epochs=1
    )
    softmax = hparams_for_model("softmax", {"learning_rate": 0.1, "max_steps": 0})
    assert (softmax.optimizer, softmax.learning_rate, softmax.max_steps) == ("sgd", 0.1, 0)
    tutorial_cnn = hparams_for_model("cnn_model_fn", {"max_steps": 100}, tutorial=True)
    assert (tutorial_cnn.optimizer, tutorial_cnn.max_steps, tutorial_cnn.epochs) == ("sgd", 100, 34)


def test_hparams_for_model_unknown_model_names_the_registered_ones():
    """An unknown model raises ValueError listing every registered model."""
    with pytest.raises(ValueError) as error:
        hparams_for_model("lenet5", {"epochs": 1})
    assert str(error.value) == f"unknown model 'lenet5'; registered: {REGISTERED}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"model": "mlp"},
            r"^hparams_for_model\('softmax'\): overrides name another model 'mlp'$",
        ),
        ({"epoch": 3}, r"^unknown hyperparameter\(s\) \['epoch'\]; known: \["),
        ({"batch_size": 0}, r"^hparams\.batch_size: expected a value > 0, got 0$"),
        ({"dropout_rate": 0.5}, r"^hparams\.dropout_rate: model 'softmax' has no dropout layer"),
    ],
)
def test_hparams_for_model_refuses_bad_overrides(overrides, message):
    """Another model, unknown names and invalid values are refused with the reason."""
    with pytest.raises(ValueError, match=message):
        hparams_for_model("softmax", overrides)


def test_hparams_from_overrides_picks_the_model_named_in_overrides():
    """The CLI path: --param model=NAME selects that model's defaults; no model, cnn_model_fn's."""
    assert hparams_from_overrides({}) == HParams()
    assert hparams_from_overrides({"epochs": 1}) == HParams(epochs=1)
    overrides = dict(parse_override(t) for t in ["model=mlp", "batch_size=64", "seed=none"])
    assert hparams_from_overrides(overrides) == dataclasses.replace(
        MODEL_DEFAULTS["mlp"].hparams, batch_size=64, seed=None
    )
    assert hparams_from_overrides({"model": "deep_cnn"}, tutorial=True).max_steps == 20_000
    with pytest.raises(ValueError, match=r"^unknown model 'cnn'; registered: "):
        hparams_from_overrides({"model": "cnn"})


def test_from_params_round_trips_every_models_defaults():
    """What the Trainer reads back from custom_config is what the CLI chose, for every model."""
    for entry in MODEL_DEFAULTS.values():
        for hparams in (entry.hparams, entry.tutorial_hparams):
            assert HParams.from_params({**hparams.to_params(), "total_steps": 9}) == hparams


def test_kernel_initializers_are_the_documented_ones():
    """The initializer names the model_fns understand (trainer/layers.initializers)."""
    assert KERNEL_INITIALIZERS == ("glorot_uniform", "zeros", "truncated_normal")


def test_hparams_module_does_not_import_tensorflow():
    """The CLI validates flags with trainer.hparams before TensorFlow loads."""
    code = "import sys, trainer.hparams; print(sorted(m for m in sys.modules if 'tensorflow' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "[]"


def test_dataset_defaults_apply_under_the_users_overrides():
    from trainer.hparams import hparams_for_model, hparams_from_overrides

    assert hparams_from_overrides({}, dataset="fashion_mnist").epochs == 10
    assert hparams_from_overrides({}, dataset="mnist").epochs == 4
    assert hparams_from_overrides({}).epochs == 3
    assert hparams_from_overrides({"epochs": 2}, dataset="fashion_mnist").epochs == 2
    # Fashion-MNIST trains with one pixel of shift, MNIST with two, unless asked;
    # without a dataset, the model's own defaults (no shift).
    assert hparams_from_overrides({}, dataset="fashion_mnist").augment_shift == 1
    assert hparams_from_overrides({}, dataset="mnist").augment_shift == 2
    assert hparams_from_overrides({}).augment_shift == 0
    mnist = hparams_from_overrides({"epochs": 2}, dataset="mnist")
    assert (mnist.epochs, mnist.augment_shift) == (2, 2)
    fashion = hparams_from_overrides({"augment_shift": 0}, dataset="fashion_mnist")
    assert (fashion.augment_shift, fashion.epochs) == (0, 10)
    assert hparams_for_model("mlp", dataset="fashion_mnist").augment_shift == 0
    # only the default model, and never its tutorial settings
    assert hparams_for_model("mlp", dataset="fashion_mnist").epochs == 5
    assert hparams_for_model("cnn_model_fn", tutorial=True, dataset="fashion_mnist").epochs == 34
