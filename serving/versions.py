"""Which versions of which models are served: version policies and labels, the
status of every version seen (TF Serving's states), and the watcher that polls
each model's base path for version directories, loads new ones, warms them up and
only then swaps them in, so some version keeps answering throughout.

Version directories are read as TF Serving's file system source reads them: a
child of the base path whose name parses as a base-10 int64 (``absl::SimpleAtoi``:
ASCII digits, an optional sign, surrounding ASCII whitespace; so ``00000123`` is
version 123 and ``-1`` version -1) is a version, kept at the path it was found
under. When two names give the same version, the last name in byte order wins,
as in TF Serving, and the others are ignored (logged). Any other name (``abc``,
``²``, the publisher's ``.incoming-*``) is skipped; so is a child that is not a
directory or cannot be read. Each such finding is logged once.

A base path may be an ``s3://`` or ``gs://`` URL (``serving/object_store.py``): there a
"directory" is only a key prefix, which appears with its first object, so an
integer prefix counts as a version only once its ``saved_model.pb`` exists, the object
the publisher writes last and the pruner deletes first (docs/serving.md, "Object-store
base paths"). Until then it is skipped, as not yet complete, and logged once.

A version that fails to load is retried, as TF Serving retries it: up to
``max_num_load_retries`` more times, ``load_retry_interval_s`` apart (TF Serving's
``--max_num_load_retries`` 5 and ``--load_retry_interval_micros`` one minute),
reported LOADING meanwhile. Unlike TF Serving, the retries do not hold up the
watcher: other versions and models are polled while one waits. When the retries
are exhausted the version is reported END with the error and not tried again
until its directory disappears and comes back; whatever was serving before keeps
serving throughout. Loading one version is ``signatures.ServableModel``.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import invalid_argument, not_found, unavailable

if TYPE_CHECKING:  # TensorFlow is imported only when a version is loaded
    from serving.signatures import ServableModel

logger = logging.getLogger(__name__)

POLICIES = ("latest", "all", "specific")
# TF Serving's defaults (model_servers/server.h): --max_num_load_retries and
# --load_retry_interval_micros.
DEFAULT_MAX_NUM_LOAD_RETRIES = 5
DEFAULT_LOAD_RETRY_INTERVAL_S = 60.0
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# absl::SimpleAtoi in base 10: ASCII whitespace around an optionally signed run of
# ASCII digits (Python's int() would also take "1_000" and non-ASCII digits).
_VERSION_NAME = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")
_URL_VERSION = re.compile(r"[0-9]+")


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
    """One served model: its name, base path, version policy and version labels, and
    its request logging (a tensorflow_serving LoggingConfig, or None: not logged)."""

    name: str
    base_path: Path | str  # a str for an s3:// or gs:// URL (pathlib would mangle it)
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)
    logging: Any = None


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error_message: str = ""


def parse_version_name(name: str) -> int | None:
    """The version a base path child's name stands for, as TF Serving parses it
    (``absl::SimpleAtoi`` into an int64), or None when it is no version."""
    match = _VERSION_NAME.fullmatch(name)
    if match is None:
        return None
    version = int(match.group(1))
    return version if _INT64_MIN <= version <= _INT64_MAX else None


@dataclass(frozen=True)
class BasePathScan:
    """What one look at a base path found: each version's directory, and the versions
    whose directory exists but cannot be read now (not loaded, but not unloaded either)."""

    versions: dict[int, Path | str]  # a str for a version under a URL base path
    unreadable: frozenset[int] = frozenset()


class BasePathScanner:
    """Reads one base path as TF Serving's file system source does, logging each odd
    child once (per reason) rather than on every poll."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = base_path
        self._logged: set[tuple[tuple[str, ...], str]] = set()

    def _once(
        self, level: int, key: tuple[tuple[str, ...], str], message: str, *args: object
    ) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.log(level, message, *args)

    def _scan_url(self) -> BasePathScan:
        from serving import object_store

        base = str(self.base_path)
        found: dict[int, list[str]] = {}
        names = object_store.listdir(base)
        for name in names:
            version = parse_version_name(name)
            path = object_store.join(base, name)
            if version is None:
                self._once(
                    logging.INFO, ((name,), "name"), "skipping %s: not a version number", path
                )
                continue
            if not object_store.exists(object_store.join(path, "saved_model.pb")):
                self._once(
                    logging.INFO,
                    ((name,), "incomplete"),
                    "not loading %s until its saved_model.pb exists (written last)",
                    path,
                )
                continue
            found.setdefault(version, []).append(name)
        versions = {v: object_store.join(base, dirs[-1]) for v, dirs in found.items()}
        present = set(names)
        self._logged = {key for key in self._logged if set(key[0]) <= present}
        return BasePathScan(versions)

    def scan(self) -> BasePathScan:
        """Every version directory now under the base path. Raises OSError when the base
        path itself cannot be listed."""
        if "://" in str(self.base_path):
            return self._scan_url()
        names = sorted(os.listdir(self.base_path), key=os.fsencode)
        found: dict[int, list[str]] = {}
        unreadable_names: set[str] = set()
        for name in names:
            version = parse_version_name(name)
            path = self.base_path / name
            if version is None:
                self._once(
                    logging.INFO, ((name,), "name"), "skipping %s: not a version number", path
                )
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as error:
                self._once(logging.WARNING, ((name,), "stat"), "skipping %s: %s", path, error)
                continue
            if not stat.S_ISDIR(mode):
                self._once(logging.WARNING, ((name,), "file"), "skipping %s: not a directory", path)
                continue
            try:
                os.listdir(path)
            except OSError as error:
                self._once(
                    logging.WARNING,
                    ((name,), "unreadable"),
                    "not loading %s until it can be read: %s",
                    path,
                    error,
                )
                unreadable_names.add(name)
            found.setdefault(version, []).append(name)
        versions = {}
        for version, dirs in found.items():
            # Byte order, and the last name wins: TF Serving's IndexChildrenByVersion.
            if len(dirs) > 1:
                self._once(
                    logging.WARNING,
                    (tuple(dirs), "duplicate"),
                    "Duplicate version directories detected. Version %d will be loaded "
                    "from %s, %s will be ignored.",
                    version,
                    dirs[-1],
                    ", ".join(dirs[:-1]),
                )
            versions[version] = self.base_path / dirs[-1]
        unreadable = frozenset(v for v, path in versions.items() if path.name in unreadable_names)
        # Forget findings about names that are gone, so the set stays small and a name
        # that comes back is reported again.
        present = set(names)
        self._logged = {key for key in self._logged if set(key[0]) <= present}
        return BasePathScan(versions, unreadable)


def list_version_dirs(base_path: Path) -> list[int]:
    """The versions under a base path, as TF Serving reads the directory names."""
    try:
        return sorted(BasePathScanner(base_path).scan().versions)
    except OSError:
        return []


Loader = Callable[[str, int, str], "ServableModel"]


def load_and_warm_up(
    model_name: str, version: int, path: str, mixed_precision: str | None = None
) -> ServableModel:
    from serving.signatures import ServableModel, warm_up

    servable = ServableModel(model_name, version, path, mixed_precision)
    warm_up(servable)
    return servable


@dataclass(frozen=True)
class RetryPolicy:
    """How a version that fails to load is retried (TF Serving's defaults)."""

    max_num_load_retries: int = DEFAULT_MAX_NUM_LOAD_RETRIES
    load_retry_interval_s: float = DEFAULT_LOAD_RETRY_INTERVAL_S

    def __post_init__(self) -> None:
        if self.max_num_load_retries < 0:
            raise ValueError(f"max load retries must be >= 0, got {self.max_num_load_retries}")
        if self.load_retry_interval_s < 0:
            raise ValueError(
                f"load retry interval must be >= 0 seconds, got {self.load_retry_interval_s}"
            )


@dataclass(frozen=True)
class _FailedLoad:
    failures: int
    next_try: float
    error: str


class ServedModel:
    """The versions of one model: what is being served now and the status of each seen."""

    def __init__(self, config: ModelConfig, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self.scanner = BasePathScanner(config.base_path)
        # Replaced, never mutated, so a request holds a consistent view without a lock.
        self.serving: dict[int, ServableModel] = {}
        self.statuses: dict[int, VersionStatus] = {}
        # Versions whose retries are exhausted: not tried again while their directory stays.
        self.failed: set[int] = set()
        # Versions that failed and wait for their next try.
        self._retrying: dict[int, _FailedLoad] = {}
        # What the last poll found (None before the first poll).
        self.last_scan: BasePathScan | None = None

    def _set_state(self, version: int, state: VersionState, error: str = "") -> None:
        self.statuses = {**self.statuses, version: VersionStatus(version, state, error)}

    def poll(self, loader: Loader, now: Callable[[], float] = time.monotonic) -> None:
        """Load what the policy wants and is not served yet (retrying failed loads when
        due), then unload what it no longer wants once its successors serve."""
        scan = self.scanner.scan()
        self.last_scan = scan
        present = scan.versions
        # A version whose directory went away is forgotten: pushed again, it is tried afresh
        # (TF Serving drops a failed version once it is no longer aspired).
        self.failed &= set(present)
        # A directory that cannot be read is skipped as if absent, unless its version
        # already serves (nothing more needs reading then).
        candidates = [
            v
            for v in present
            if v not in self.failed and (v not in scan.unreadable or v in self.serving)
        ]
        wanted = self.config.policy.select(candidates)
        for version in sorted(set(self._retrying) - set(wanted)):
            attempt = self._retrying.pop(version)
            self._set_state(version, VersionState.END, f"failed to load: {attempt.error}")
            logger.info(
                "%s version %d: retries cancelled, no longer wanted", self.config.name, version
            )
        for version in wanted:
            if version in self.serving:
                continue
            attempt = self._retrying.get(version)
            if attempt is not None and now() < attempt.next_try:
                continue
            self._load(loader, version, str(present[version]), attempt, now)
        # Unloading only once what replaces a version serves keeps something serving:
        # versions that just failed for good, still wait for a retry or cannot be read
        # yet do not count.
        settled = [
            v
            for v in present
            if v in self.serving
            or (v not in self.failed and v not in self._retrying and v not in scan.unreadable)
        ]
        keep = set(self.config.policy.select(settled))
        for version in sorted(set(self.serving) - keep):
            self._set_state(version, VersionState.UNLOADING)
            self.serving = {v: s for v, s in self.serving.items() if v != version}
            self._set_state(version, VersionState.END)
            logger.info("unloaded %s version %d", self.config.name, version)

    def _load(
        self,
        loader: Loader,
        version: int,
        path: str,
        previous: _FailedLoad | None,
        now: Callable[[], float],
    ) -> None:
        name = self.config.name
        self._set_state(version, VersionState.LOADING)
        if previous is None:
            logger.info("loading %s version %d from %s", name, version, path)
        else:
            logger.info(
                "retrying to load %s version %d, retry: %d", name, version, previous.failures
            )
        try:
            servable = loader(name, version, path)
        except Exception as error:  # noqa: BLE001 - any failure must leave the old version up
            message = str(error) or type(error).__name__
            failures = (previous.failures if previous else 0) + 1
            still_serving = sorted(self.serving) or "nothing"
            if failures <= self.retry.max_num_load_retries:
                self._retrying[version] = _FailedLoad(
                    failures, now() + self.retry.load_retry_interval_s, message
                )
                logger.error(
                    "%s version %d failed to load (retry %d of %d in %g s; still serving %s): %s",
                    name,
                    version,
                    failures,
                    self.retry.max_num_load_retries,
                    self.retry.load_retry_interval_s,
                    still_serving,
                    message,
                )
                return
            self._retrying.pop(version, None)
            self.failed.add(version)
            self._set_state(version, VersionState.END, f"failed to load: {message}")
            logger.error(
                "%s version %d failed to load, %d retries exhausted; still serving %s: %s",
                name,
                version,
                self.retry.max_num_load_retries,
                still_serving,
                message,
            )
            return
        self._retrying.pop(version, None)
        self.serving = {**self.serving, version: servable}
        self._set_state(version, VersionState.AVAILABLE)
        # float32, or with --mixed-precision bfloat16 "frozen" / "variables" (signatures.py).
        precision = getattr(servable, "precision", "float32")
        logger.info("serving %s version %d (%s)", name, version, precision)

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
        if self.last_scan is None or not self.last_scan.versions:
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
        statuses = self.statuses
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
        retry: RetryPolicy | None = None,
    ) -> None:
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        self.models = {c.name: ServedModel(c, retry) for c in configs}
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Called after each poll that changed what is served (metrics use it).
        self.on_change: Callable[[], None] = lambda: None
        self._base_path_errors: dict[str, str] = {}

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
        """Poll every model's base path. Nothing a directory does stops the watcher: an
        error is logged (once while it repeats) and the next poll tries again."""
        for name, served in self.models.items():
            before = served.serving
            try:
                served.poll(self._loader)
            except Exception as error:  # noqa: BLE001 - the watcher must outlive any directory
                message = f"{type(error).__name__}: {error}"
                if self._base_path_errors.get(name) != message:
                    self._base_path_errors[name] = message
                    level = logging.ERROR if isinstance(error, OSError) else logging.CRITICAL
                    logger.log(
                        level,
                        "cannot poll %s for model %s: %s",
                        served.config.base_path,
                        name,
                        message,
                        exc_info=not isinstance(error, OSError),
                    )
            else:
                self._base_path_errors.pop(name, None)
            if served.serving.keys() != before.keys():
                try:
                    self.on_change()
                except Exception:  # noqa: BLE001
                    logger.exception("on_change callback failed")

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
    """A version as it appears in a URL or flag (ASCII digits, as TF Serving's REST
    routes match it); 400 otherwise."""
    if _URL_VERSION.fullmatch(text) is None or int(text) > _INT64_MAX:
        raise invalid_argument(f"version must be an integer, got {text!r}")
    return int(text)
