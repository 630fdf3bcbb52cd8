"""bench/choose_epochs.py's rule on given accuracies (no training): one run per
candidate against the binomial standard error, and the paired rule over seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def choose():
    spec = importlib.util.spec_from_file_location("choose_epochs", REPO / "bench/choose_epochs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.choose


# 2026-11-27's three-seed study on MNIST's 5,000 validation images (docs/models.md).
STUDY = [
    ({"epochs": 3, "seed": 1}, 3, 0.9922),
    ({"epochs": 4, "seed": 1}, 4, 0.9926),
    ({"epochs": 3, "seed": 2}, 3, 0.9918),
    ({"epochs": 4, "seed": 2}, 4, 0.9924),
    ({"epochs": 3, "seed": 3}, 3, 0.9924),
    ({"epochs": 4, "seed": 3}, 4, 0.9934),
]


def test_one_run_each_takes_the_fewest_epochs_within_one_standard_error(choose):
    lines = choose([({"epochs": 3}, 3, 0.9922), ({"epochs": 4}, 4, 0.9930)], 5000)
    # sqrt(0.993 * 0.007 / 5000) = 0.0012: 3 epochs are within it.
    assert lines == [
        "best 0.9930; one standard error 0.0012; chosen: {'epochs': 3} "
        "(0.9922; fewest epochs within one standard error of the best)"
    ]


def test_one_run_each_keeps_the_better_when_the_gap_is_larger(choose):
    lines = choose([({"epochs": 2}, 2, 0.9880), ({"epochs": 4}, 4, 0.9930)], 5000)
    assert lines[-1].endswith(
        "chosen: {'epochs': 4} (0.9930; fewest epochs within one standard error of the best)"
    )


def test_paired_seeds_see_a_difference_that_holds_on_every_seed(choose):
    lines = choose(STUDY, 5000)
    assert lines[0] == "paired over seeds 1, 2, 3; best mean: epochs=4"
    # Differences 0.0004, 0.0006, 0.0010: mean 0.00067, sd 0.00031, se 0.00018.
    # Column padding aside, word for word.
    assert " ".join(lines[1].split()) == (
        "epochs=3 mean 0.9921 best minus this +0.0007 (standard error 0.0002): worse"
    )
    assert " ".join(lines[2].split()) == (
        "epochs=4 mean 0.9928 best minus this +0.0000 (standard error 0.0000): as good"
    )
    assert lines[-1].startswith("chosen: epochs=4 (mean 0.9928;")


def test_paired_seeds_take_fewer_epochs_when_the_sign_changes(choose):
    mixed = [
        ({"epochs": 3, "seed": 1}, 3, 0.9930),
        ({"epochs": 4, "seed": 1}, 4, 0.9926),
        ({"epochs": 3, "seed": 2}, 3, 0.9918),
        ({"epochs": 4, "seed": 2}, 4, 0.9924),
        ({"epochs": 3, "seed": 3}, 3, 0.9920),
        ({"epochs": 4, "seed": 3}, 4, 0.9934),
    ]
    lines = choose(mixed, 5000)
    assert "best mean: epochs=4" in lines[0]
    assert lines[1].endswith("as good")
    assert lines[-1].startswith("chosen: epochs=3 (mean 0.9923;")


def test_unequal_seeds_fall_back_to_one_run_per_candidate(choose):
    lines = choose(STUDY[:-1], 5000)  # epochs=4 lacks seed 3
    assert len(lines) == 1 and lines[0].startswith("best 0.9926; one standard error 0.0012")
