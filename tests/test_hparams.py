"""Tests of trainer/hparams.py: defaults, validation, overrides and CLI parsing."""

import dataclasses

import pytest

from trainer.hparams import OPTIMIZERS, HParams, parse_override

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
        "batch_size": 100,
        "epochs": 3,
        "max_steps": 0,
        "dropout_rate": 0.4,
        "seed": 42,
        "in_memory": True,
        "validate_every_epoch": True,
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
        ("model=cnn_model_fn", ("model", "cnn_model_fn")),
        ("model=a=b", ("model", "a=b")),
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
