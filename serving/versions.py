"""Which versions of which models are served: version policies and labels, the
status of every version seen (TF Serving's states), and the watcher that polls
each model's base path for integer version directories, loads new ones, warms
them up and only then swaps them in, so some version keeps answering throughout.

A version that fails to load or to warm up is reported (state END with the error)
and never retried; whatever was serving before keeps serving. Loading one version
is ``signatures.ServableModel``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import invalid_argument, not_found, unavailable

if TYPE_CHECKING:  # TensorFlow is imported only when a version is loaded
    from serving.signatures import ServableModel

logger = logging.getLogger(__name__)

POLICIES = ("latest", "all", "specific")


class VersionState(enum.Enum):
    """TF Serving's ModelVersionStatus.State names, same numbers as the proto enum."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's model_version_policy: the newest ``num_latest``, all, or listed versions."""

    kind: str = "latest"
    num_latest: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"version policy {self.kind!r}: expected one of {', '.join(POLICIES)}")
        if self.kind == "latest" and self.num_latest < 1:
            raise ValueError(
                f"version policy latest: num_latest must be >= 1, got {self.num_latest}"
            )
        if self.kind == "specific" and not self.versions:
            raise ValueError("version policy specific: list at least one version")

    def select(self, candidates: Sequence[int]) -> list[int]:
        """Of the versions that could be loaded, those this policy serves, ascending."""
        ordered = sorted(candidates)
        if self.kind == "latest":
            return ordered[-self.num_latest :]
        if self.kind == "all":
            return ordered
        return [v for v in ordered if v in self.versions]


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, base path, version policy and version labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class VersionStatus:
    version: int
    state: VersionState
    error_message: str = ""


def list_version_dirs(base_path: Path) -> list[int]:
    """Integer-named subdirectories: what TF Serving treats as versions (``.incoming-*`` is not)."""
    if not base_path.is_dir():
        return []
    return sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit() and p.is_dir())


Loader = Callable[[str, int, str], "ServableModel"]


def load_and_warm_up(model_name: str, version: int, path: str) -> ServableModel:
    from serving.signatures import ServableModel, warm_up

    servable = ServableModel(model_name, version, path)
    warm_up(servable)
    return servable


class ServedModel:
    """The versions of one model: what is being served now and the status of each seen."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        # Replaced, never mutated, so a request holds a consistent view without a lock.
        self.serving: dict[int, ServableModel] = {}
        self.statuses: dict[int, VersionStatus] = {}
        self.failed: set[int] = set()

    def _set_state(self, version: int, state: VersionState, error: str = "") -> None:
        self.statuses[version] = VersionStatus(version, state, error)

    def poll(self, loader: Loader) -> None:
        """Load what the policy wants and is not served yet, then unload what it no longer wants."""
        present = list_version_dirs(self.config.base_path)
        wanted = self.config.policy.select([v for v in present if v not in self.failed])
        for version in wanted:
            if version in self.serving:
                continue
            path = str(self.config.base_path / str(version))
            self._set_state(version, VersionState.LOADING)
            logger.info("loading %s version %d from %s", self.config.name, version, path)
            try:
                servable = loader(self.config.name, version, path)
            except Exception as error:  # noqa: BLE001 - any failure must leave the old version up
                message = str(error) or type(error).__name__
                logger.error(
                    "%s version %d failed to load; still serving %s: %s",
                    self.config.name,
                    version,
                    sorted(self.serving) or "nothing",
                    message,
                )
                self.failed.add(version)
                self._set_state(version, VersionState.END, f"failed to load: {message}")
                continue
            self.serving = {**self.serving, version: servable}
            self._set_state(version, VersionState.AVAILABLE)
            logger.info("serving %s version %d", self.config.name, version)
        # Unloading only after every wanted version is up keeps something serving;
        # wanted again without the versions that just failed, whose predecessors stay.
        wanted = self.config.policy.select([v for v in present if v not in self.failed])
        for version in sorted(set(self.serving) - set(wanted)):
            self._set_state(version, VersionState.UNLOADING)
            self.serving = {v: s for v, s in self.serving.items() if v != version}
            self._set_state(version, VersionState.END)
            logger.info("unloaded %s version %d", self.config.name, version)

    def resolve(self, version: int | None = None, label: str | None = None) -> ServableModel:
        """The servable a request names; TF Serving's errors when there is none."""
        name = self.config.name
        serving = self.serving
        if label is not None:
            if label not in self.config.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = self.config.labels[label]
        if version is None:
            if serving:
                return serving[max(serving)]
            raise unavailable(self._nothing_loaded_message())
        if version in serving:
            return serving[version]
        status = self.statuses.get(version)
        if status is not None and status.state in (VersionState.START, VersionState.LOADING):
            raise unavailable(f"Model {name} version {version} is not loaded yet (LOADING)")
        detail = f" ({status.error_message})" if status is not None and status.error_message else ""
        raise not_found(
            f"Servable not found for request: Specific({name}, {version}){detail}; "
            f"serving versions: {sorted(serving) or 'none'}"
        )

    def _nothing_loaded_message(self) -> str:
        name = self.config.name
        if any(s.state == VersionState.LOADING for s in self.statuses.values()):
            return f"Model {name} is not loaded yet (LOADING)"
        if not list_version_dirs(self.config.base_path):
            return (
                f"Model {name} has no version loaded yet: no version directory "
                f"under {self.config.base_path}"
            )
        return f"Model {name} has no version loaded: every version failed to load"

    def version_statuses(
        self, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """What GetModelStatus reports: every version seen (newest first), or the one named."""
        name = self.config.name
        if label is not None:
            if label not in self.config.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = self.config.labels[label]
        statuses = dict(self.statuses)
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]


class ModelRegistry:
    """Every served model, and the thread that polls their base paths."""

    def __init__(
        self,
        configs: Sequence[ModelConfig],
        poll_seconds: float = 1.0,
        loader: Loader = load_and_warm_up,
    ) -> None:
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        self.models = {c.name: ServedModel(c) for c in configs}
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Called after each poll that changed what is served (metrics use it).
        self.on_change: Callable[[], None] = lambda: None

    def model(self, name: str, version: int | None = None) -> ServedModel:
        if name not in self.models:
            request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {request}")
        return self.models[name]

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableModel:
        return self.model(name, version).resolve(version, label)

    def poll_once(self) -> None:
        for served in self.models.values():
            before = dict(served.serving)
            try:
                served.poll(self._loader)
            except OSError as error:
                logger.error("cannot read %s: %s", served.config.base_path, error)
            if served.serving.keys() != before.keys():
                self.on_change()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Poll in a background thread (the first poll starts at once)."""
        self._thread = threading.Thread(target=self._run, name="version-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def all_available(self) -> bool:
        return all(m.serving for m in self.models.values())


def parse_version(text: str) -> int:
    """A version as it appears in a URL or flag; 400 when it is not an integer."""
    try:
        return int(text)
    except ValueError:
        raise invalid_argument(f"version must be an integer, got {text!r}") from None
