"""Training hyperparameters: one typed place for the defaults, their validation
and their conversion to and from the plain ``params`` dict that a model_fn
receives (and that TFX carries in the Trainer's ``custom_config``).

No TensorFlow here, so the CLI can validate flags before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop")


@dataclass(frozen=True)
class HParams:
    """Settings of one training run; every field can be overridden from the CLI."""

    model: str = "cnn_model_fn"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    # Decay the learning rate to this fraction of its start along a cosine over the run.
    final_learning_rate_fraction: float = 0.05
    batch_size: int = 100
    epochs: int = 3
    # 0 means "as many steps as the epochs need"; >0 caps the total steps.
    max_steps: int = 0
    dropout_rate: float = 0.4
    seed: int | None = 42
    # Hold the transformed training set in memory (MNIST fits: 60,000 x 784 floats).
    in_memory: bool = True
    validate_every_epoch: bool = True

    def validate(self) -> HParams:
        """Return self, or raise ValueError naming the first offending field."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"hparams.optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        positive = {
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"hparams.{name}: expected a value > 0, got {value!r}")
        if self.max_steps < 0:
            raise ValueError(f"hparams.max_steps: expected >= 0, got {self.max_steps!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(
                f"hparams.dropout_rate: expected 0 <= rate < 1, got {self.dropout_rate!r}"
            )
        if not 0.0 <= self.final_learning_rate_fraction <= 1.0:
            raise ValueError(
                "hparams.final_learning_rate_fraction: expected 0..1, "
                f"got {self.final_learning_rate_fraction!r}"
            )
        return self

    def to_params(self) -> dict[str, Any]:
        """The plain dict handed to a model_fn and stored in the Trainer's custom_config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> HParams:
        """Build from a dict, ignoring keys that are not hyperparameters."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known}).validate()

    def with_overrides(self, overrides: dict[str, Any]) -> HParams:
        """Copy with ``overrides`` applied; unknown names raise ValueError."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides).validate()


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``name=value`` from the command line into a typed pair."""
    if "=" not in text:
        raise ValueError(f"--param {text!r}: expected name=value")
    name, raw = text.split("=", 1)
    name = name.strip()
    field_types = {f.name: f.type for f in fields(HParams)}
    if name not in field_types:
        raise ValueError(
            f"--param {text!r}: unknown hyperparameter {name!r}; known: {sorted(field_types)}"
        )
    kind = field_types[name]
    try:
        if "bool" in kind:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return name, lowered in ("true", "1", "yes")
        if "int" in kind:
            if "None" in kind and raw.strip().lower() in ("none", ""):
                return name, None
            return name, int(raw)
        if "float" in kind:
            return name, float(raw)
    except ValueError:
        raise ValueError(f"--param {text!r}: {name} expects {kind}, got {raw!r}") from None
    return name, raw
