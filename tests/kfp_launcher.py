"""A test-only launcher that executes the pipeline ``pipeline/kubeflow_runner.py``
compiles, task by task, the way a Kubeflow Pipelines v2 backend would hand each task
to its container. It proves the compiled spec; it is not an orchestrator.

For every task of ``root.dag.tasks``, in dependency order (``dependentTasks`` plus the
producers of its ``taskOutputArtifact`` inputs), it does what the backend's driver and
launcher do:

* **Container tasks** run exactly ``container.command`` + ``container.args`` from
  ``deploymentSpec``, with ``{{$}}`` replaced by the task's ExecutorInput JSON and
  ``python`` by this interpreter; the repository is on ``PYTHONPATH`` and the image's
  ``ENV`` (``Dockerfile``) is set, as in the image, and the image's ``.pth`` line that
  registers TF's ``s3://`` in every process (``serving/s3_startup.py``) runs from a
  ``sitecustomize.py`` the launcher writes. The ExecutorInput is built as the
  driver builds it: input artifacts are the RuntimeArtifacts the producing tasks
  recorded (URI, type, and the metadata their ExecutorOutput file wrote, e.g. ``span``
  and ``split_names``), named by their record id as KFP names them
  (``strconv.FormatInt(mlmd_id)``); parameters are the task's ``runtimeValue``
  constants; each output artifact gets a fresh URI under the pipeline root, and the
  task an ``outputFile``. With a local pipeline root (standing for the bucket) the
  output artifact directories are created first, since on an object store every
  prefix is writable as it is.
* **Output layout** (Vertex's, which the TFX entrypoint assumes: its task id is the
  ``outputFile``'s directory name): ``<pipeline_root>/<run_id>/<task>_<uuid>/<output
  key>`` and ``<pipeline_root>/<run_id>/<task>_<uuid>/executor_output.json``.
  Vertex puts ``<project number>/<job id>`` where this puts ``<run_id>``. The
  open-source KFP 2.x driver uses ``<pipeline_root>/<pipeline name>/<run id>/<task>/
  <uuid>/<output key>`` (``backend/src/v2/driver/driver.go``, ``provisionOutputs``).
* **ExampleGen's ``lifecycle.preCacheCheck``** (TFX's
  ``file_based_example_gen.driver``) runs first, with the same ExecutorInput and
  ``outputFile``; what it writes there (span, version, fingerprint, the resolved
  ``input_config``; the Examples' metadata) is applied to the executor's ExecutorInput
  before the executor runs, as the Vertex service updates the task's properties and
  artifacts (the driver's docstring); the executor then also finds the file at its
  ``outputFile``, which TFX's entrypoint reads as the driver's output.
* **After a container task**, its ExecutorOutput file is read and each output
  artifact's metadata merged into the provisioned one (KFP's
  ``mergeRuntimeArtifacts``), then recorded, state LIVE.
* **Resolver tasks** (``deploymentSpec.executors.*.resolver.outputArtifactQueries``)
  are answered from this launcher's own record of every artifact it recorded, in this
  run and earlier runs that share the record file: each ``filter`` is evaluated
  clause by clause (``schema_title``, ``state``, ``name``,
  ``metadata.<key>.number_value`` / ``string_value``, joined by ``AND``; ``{{$.inputs
  .artifacts['input'].metadata['key']}}`` placeholders filled from the task's
  inputs), and the latest matching artifact (highest record id) is the answer, none
  when nothing matches, as on a first run.

Caching is off: every task runs, whatever its ``cachingOptions`` say.

Differences from a real backend (also in docs/orchestrators.md): no Argo, pods or
containers (one local process per task, this machine's venv instead of the image);
no ML Metadata and no KFP cache (a JSON record file instead); resolver queries
answered from that record only, with the subset of the filter grammar TFX emits; one
run at a time, tasks one after another (no parallel branches); no retries, no
timeouts per task beyond ``task_timeout``, no artifact download/upload (the
executors read and write the URIs themselves, which is what TFX's executors do on
Vertex too). The open-source KFP 2.x backend cannot run this spec at all: it rejects
resolver executors ("resolver not implemented yet"), never runs
``lifecycle.preCacheCheck`` and reads only ``runtimeValue.constant``, not the
deprecated ``constantValue`` TFX 1.16 compiles; this launcher follows what the spec
asks for, which is what Vertex AI Pipelines runs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving import s3_startup

REPO = Path(__file__).resolve().parents[1]
# The image's ENV (Dockerfile) that matters to the steps: Keras 2 before TFX imports
# TensorFlow, oneDNN as in every other run, TF's s3:// registered in every process
# (serving/s3_startup.py).
IMAGE_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TF_USE_LEGACY_KERAS": "1",
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "MNIST_TFX_TF_S3": "1",
}
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.artifacts\['([^']+)'\]\.metadata\['([^']+)'\]\}\}")
CLAUSE = re.compile(r'^\s*([A-Za-z_][\w.]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*$')


class TaskFailedError(RuntimeError):
    """A task exited non-zero (or its resolver could not be evaluated); the message
    names the task and ends with its stderr tail."""

    def __init__(self, task: str, status: int, stderr_tail: str) -> None:
        self.task, self.status, self.stderr_tail = task, status, stderr_tail
        self.result: RunResult | None = None
        super().__init__(f"task {task} failed with exit status {status}:\n{stderr_tail}")


@dataclass
class TaskRun:
    name: str
    kind: str  # "container" or "resolver"
    seconds: float
    status: int
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    driver_seconds: float | None = None


@dataclass
class RunResult:
    run_id: str
    pipeline_root: str
    tasks: list[TaskRun]

    def task(self, name: str) -> TaskRun:
        return next(t for t in self.tasks if t.name == name)

    def table(self) -> str:
        lines = [f"{'task':<56} {'kind':<9} {'status':>6} {'seconds':>8}"]
        for t in self.tasks:
            seconds = f"{t.seconds:8.1f}"
            if t.driver_seconds is not None:
                seconds += f"  (driver {t.driver_seconds:.1f})"
            lines.append(f"{t.name:<56} {t.kind:<9} {t.status:>6} {seconds}")
        lines.append(f"{'total':<56} {'':<9} {'':>6} {sum(t.seconds for t in self.tasks):8.1f}")
        return "\n".join(lines)


def load_spec(path: Path) -> tuple[dict[str, Any], str | None]:
    """The PipelineSpec and the pipeline root in a PipelineJob JSON or a PipelineSpec
    YAML, as ``pipeline/kubeflow_runner.py`` writes them."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        job = json.loads(text)
        spec = job.get("pipelineSpec", job)
        root = job.get("runtimeConfig", {}).get("gcsOutputDirectory")
    else:
        import yaml

        spec = yaml.safe_load(text)
        root = None
    return spec, root or spec.get("defaultPipelineRoot")


def task_order(tasks: Mapping[str, Any]) -> list[str]:
    """Tasks in dependency order; ties broken by name so runs are repeatable."""
    needs = {name: set(upstream_tasks(body)) for name, body in tasks.items()}
    for name, upstream in needs.items():
        unknown = upstream - set(tasks)
        if unknown:
            raise ValueError(f"task {name}: depends on unknown tasks {sorted(unknown)}")
    order: list[str] = []
    while needs:
        ready = sorted(name for name, upstream in needs.items() if not upstream - set(order))
        if not ready:
            raise ValueError(f"tasks {sorted(needs)}: dependency cycle")
        order.append(ready[0])
        del needs[ready[0]]
    return order


def upstream_tasks(body: Mapping[str, Any]) -> list[str]:
    producers = set(body.get("dependentTasks", []))
    for artifact in body.get("inputs", {}).get("artifacts", {}).values():
        if "taskOutputArtifact" in artifact:
            producers.add(artifact["taskOutputArtifact"]["producerTask"])
    return sorted(producers)


def schema_title(artifact_type: Mapping[str, Any]) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    match = re.search(r"^title:\s*(\S+)", artifact_type.get("instanceSchema", ""), re.M)
    return match.group(1) if match else "system.Artifact"


def parameter_inputs(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``inputs.parameters`` (the deprecated ``Value`` map a schema 2.0.0 task gets,
    which TFX's entrypoint reads when it has no inputs spec) and
    ``inputs.parameterValues`` (``google.protobuf.Value``) from the runtime constants."""
    parameters, values = {}, {}
    for name, spec in body.get("inputs", {}).get("parameters", {}).items():
        runtime = spec.get("runtimeValue")
        if runtime is None:
            raise ValueError(f"parameter {name}: only runtimeValue constants are supported")
        if "constantValue" in runtime:
            constant = runtime["constantValue"]
            parameters[name] = dict(constant)
            if "intValue" in constant:
                values[name] = int(constant["intValue"])
            elif "doubleValue" in constant:
                values[name] = float(constant["doubleValue"])
            else:
                values[name] = constant.get("stringValue", "")
        else:
            value = runtime["constant"]
            values[name] = value
            if isinstance(value, bool) or not isinstance(value, int | float):
                parameters[name] = {"stringValue": str(value)}
            elif float(value).is_integer():
                parameters[name] = {"intValue": str(int(value))}
            else:
                parameters[name] = {"doubleValue": value}
    return parameters, values


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


class Storage:
    """Reads and writes the files the launcher itself touches (the ExecutorOutput files
    and nothing else): local paths directly, ``s3://`` through a boto3 client, so this
    process never loads TensorFlow's S3 filesystem."""

    def __init__(self, s3_client: Any = None) -> None:
        self.s3 = s3_client

    def read(self, uri: str) -> bytes | None:
        if uri.startswith("s3://"):
            bucket, key = uri[5:].split("/", 1)
            try:
                return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                return None
        if "://" in uri:
            raise ValueError(f"{uri}: the launcher reads local paths and s3:// only")
        path = Path(uri)
        return path.read_bytes() if path.exists() else None


class ArtifactRecord:
    """The launcher's stand-in for ML Metadata: every artifact a task produced, with a
    record id (its KFP name), schema title, state, URI, metadata and producing task and
    run, in a JSON file that later runs read too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.artifacts: list[dict[str, Any]] = (
            json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        )

    def add(self, runtime_artifact: Mapping[str, Any], run_id: str, task: str, key: str) -> dict:
        record_id = len(self.artifacts) + 1
        entry = {
            "id": record_id,
            "name": str(record_id),
            "schema_title": schema_title(runtime_artifact.get("type", {})),
            "state": "LIVE",
            "uri": runtime_artifact["uri"],
            "type": runtime_artifact.get("type", {}),
            "metadata": runtime_artifact.get("metadata", {}),
            "run_id": run_id,
            "task": task,
            "key": key,
        }
        self.artifacts.append(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.artifacts, indent=1), encoding="utf-8")
        return entry

    def query(self, filter_text: str) -> list[dict[str, Any]]:
        """The artifacts matching ``filter_text`` (already free of placeholders), latest
        first."""
        clauses = [parse_clause(c) for c in re.split(r"\s+AND\s+", filter_text.strip())]
        matches = [a for a in self.artifacts if all(test(a) for test in clauses)]
        return sorted(matches, key=lambda a: a["id"], reverse=True)


def parse_clause(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """One ``key=value`` clause of a resolver filter as a predicate over a record."""
    match = CLAUSE.match(text)
    if not match:
        raise ValueError(f"resolver filter clause {text!r}: expected key=value")
    key, raw = match.groups()
    value: Any = json.loads(raw) if raw.startswith('"') else raw
    if key in ("schema_title", "name", "state", "uri"):
        return lambda a: str(a[key]) == str(value)
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "metadata" and parts[2] in ("number_value", "string_value"):
        field_name, kind = parts[1], parts[2]
        if kind == "number_value":
            return lambda a: (
                isinstance(a["metadata"].get(field_name), int | float)
                and float(a["metadata"][field_name]) == float(value)
            )
        return lambda a: a["metadata"].get(field_name) == str(value)
    raise ValueError(f"resolver filter clause {text!r}: unsupported key {key!r}")


class KfpLauncher:
    """Runs one compiled pipeline; ``run()`` once per pipeline run."""

    def __init__(
        self,
        spec_path: Path,
        *,
        work_dir: Path,
        pipeline_root: str | None = None,
        record: Path | None = None,
        env: Mapping[str, str] | None = None,
        s3_client: Any = None,
        python: str = sys.executable,
        task_timeout: float = 1800.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.spec, compiled_root = load_spec(spec_path)
        # Like PipelineJob(pipeline_root=...) on Vertex: the run's root overrides the
        # compiled one.
        self.pipeline_root = (pipeline_root or compiled_root or "").rstrip("/")
        if not self.pipeline_root:
            raise ValueError(f"{spec_path}: no pipeline root in the spec and none given")
        self.work_dir = work_dir
        self.record = ArtifactRecord(record or work_dir / "artifact_record.json")
        self.env = {**(env if env is not None else os.environ), **IMAGE_ENV}
        # The image runs s3_startup.STARTUP_LINE from a .pth file in site-packages; a
        # venv shared with other tests gets it from a sitecustomize on PYTHONPATH.
        startup = work_dir / "image-site"
        startup.mkdir(parents=True, exist_ok=True)
        (startup / "sitecustomize.py").write_text(s3_startup.STARTUP_LINE + "\n")
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(startup), str(REPO), self.env.get("PYTHONPATH", "")) if p
        )
        self.storage = Storage(s3_client)
        self.python = python
        self.task_timeout = task_timeout
        self.log = log

    # -- the run -----------------------------------------------------------------
    def run(self, run_id: str | None = None, stop_after: str | None = None) -> RunResult:
        """Every task in dependency order (up to ``stop_after`` when given); on a failed
        task, ``TaskFailedError`` with the run so far as its ``result``."""
        run_id = run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        tasks = self.spec["root"]["dag"]["tasks"]
        produced: dict[str, dict[str, list[dict[str, Any]]]] = {}
        result = RunResult(run_id, self.pipeline_root, [])
        for name in task_order(tasks):
            body = tasks[name]
            component = self.spec["components"][body["componentRef"]["name"]]
            executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
            inputs = self._input_artifacts(name, body, produced)
            started = time.monotonic()
            try:
                if "resolver" in executor:
                    outputs = self._resolve(name, executor["resolver"], inputs)
                    task_run = TaskRun(name, "resolver", time.monotonic() - started, 0, outputs)
                elif "container" in executor:
                    task_run = self._run_container(run_id, name, body, component, executor, inputs)
                else:
                    raise ValueError(f"task {name}: executor kind {sorted(executor)} unsupported")
            except TaskFailedError as failed:
                result.tasks.append(
                    TaskRun(name, "container", time.monotonic() - started, failed.status)
                )
                failed.result = result
                self.log(f"kfp-launcher: {failed}\n{result.table()}")
                raise
            produced[name] = task_run.outputs
            result.tasks.append(task_run)
            self.log(f"kfp-launcher: {name} ({task_run.kind}) exit {task_run.status}, "
                     f"{task_run.seconds:.1f} s")  # fmt: skip
            if name == stop_after:
                break
        return result

    def _input_artifacts(
        self, task: str, body: Mapping[str, Any], produced: Mapping[str, Any]
    ) -> dict[str, list[dict[str, Any]]]:
        inputs = {}
        for key, spec in body.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in spec:
                raise ValueError(f"task {task}: input {key} is not a taskOutputArtifact")
            ref = spec["taskOutputArtifact"]
            inputs[key] = produced[ref["producerTask"]].get(ref["outputArtifactKey"], [])
        return inputs

    @staticmethod
    def _runtime_artifact(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "name": entry["name"],
            "type": entry["type"],
            "uri": entry["uri"],
            "metadata": entry["metadata"],
        }

    # -- resolver tasks ----------------------------------------------------------
    def _resolve(
        self, task: str, resolver: Mapping[str, Any], inputs: Mapping[str, list[dict]]
    ) -> dict[str, list[dict[str, Any]]]:
        outputs = {}
        for key, query in resolver.get("outputArtifactQueries", {}).items():
            filter_text = self.fill_placeholders(query["filter"], inputs)
            outputs[key] = [] if filter_text is None else self.record.query(filter_text)[:1]
        return outputs

    @staticmethod
    def fill_placeholders(filter_text: str, inputs: Mapping[str, list[dict]]) -> str | None:
        """``filter_text`` with its input placeholders filled, or None when an input it
        names is empty (a first run: no blessed model yet, so no model either)."""
        missing = False

        def fill(match: re.Match) -> str:
            nonlocal missing
            artifacts = inputs.get(match.group(1)) or []
            if not artifacts or match.group(2) not in artifacts[0]["metadata"]:
                missing = True
                return ""
            return str(artifacts[0]["metadata"][match.group(2)])

        filled = PLACEHOLDER.sub(fill, filter_text)
        return None if missing else filled

    # -- container tasks ---------------------------------------------------------
    def _executor_input(
        self, run_id: str, task: str, body: Mapping[str, Any], component: Mapping[str, Any],
        inputs: Mapping[str, list[dict]],
    ) -> dict[str, Any]:  # fmt: skip
        task_root = join(self.pipeline_root, run_id, f"{task}_{uuid.uuid4().hex[:12]}")
        parameters, values = parameter_inputs(body)
        outputs = {}
        for key, spec in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            artifact = {"type": spec["artifactType"], "uri": join(task_root, key)}
            if spec.get("metadata"):
                artifact["metadata"] = spec["metadata"]
            outputs[key] = {"artifacts": [artifact]}
        return {
            "inputs": {
                "parameters": parameters,
                "parameterValues": values,
                "artifacts": {
                    key: {"artifacts": [self._runtime_artifact(a) for a in artifacts]}
                    for key, artifacts in inputs.items()
                },
            },
            "outputs": {
                "artifacts": outputs,
                "outputFile": join(task_root, "executor_output.json"),
            },
        }

    def _command(self, container: Mapping[str, Any], executor_input: Mapping) -> list[str]:
        text = json.dumps(executor_input, sort_keys=True)
        command = [self.python if c == "python" else c for c in container["command"]]
        return command + [a.replace("{{$}}", text) for a in container.get("args", [])]

    def _call(self, task: str, step: str, command: list[str]) -> tuple[int, float]:
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out_path, err_path = logs / f"{task}.{step}.stdout", logs / f"{task}.{step}.stderr"
        cwd = self.work_dir / "cwd"  # the image's WORKDIR holds the code; so does PYTHONPATH
        cwd.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                status = subprocess.run(
                    command, cwd=cwd, env=self.env, stdout=out, stderr=err,
                    timeout=self.task_timeout, check=False,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                status = -9
        seconds = time.monotonic() - started
        if status != 0:
            tail = err_path.read_text(errors="replace")[-4000:]
            raise TaskFailedError(f"{task} ({step})", status, tail)
        return status, seconds

    def _executor_output(self, uri: str) -> dict[str, Any]:
        data = self.storage.read(uri)
        return json.loads(data) if data else {}

    def _run_container(
        self, run_id: str, task: str, body: Mapping[str, Any], component: Mapping[str, Any],
        executor: Mapping[str, Any], inputs: Mapping[str, list[dict]],
    ) -> TaskRun:  # fmt: skip
        container = executor["container"]
        executor_input = self._executor_input(run_id, task, body, component, inputs)
        output_file = executor_input["outputs"]["outputFile"]
        if "://" not in self.pipeline_root:
            # A local root stands for the bucket, where every prefix is writable without
            # creating it; an executor may write ``<uri>/file`` without makedirs (our
            # DataValidator does), which works on gs:// and s3:// as compiled.
            for artifact_list in executor_input["outputs"]["artifacts"].values():
                Path(artifact_list["artifacts"][0]["uri"]).mkdir(parents=True, exist_ok=True)
        driver_seconds = None
        pre_cache_check = container.get("lifecycle", {}).get("preCacheCheck")
        if pre_cache_check:
            _, driver_seconds = self._call(
                task, "driver", self._command(pre_cache_check, executor_input)
            )
            executor_input = apply_driver_output(executor_input, self._executor_output(output_file))
        _, seconds = self._call(task, "executor", self._command(container, executor_input))
        executor_output = self._executor_output(output_file)
        outputs: dict[str, list[dict[str, Any]]] = {}
        for key, artifact_list in executor_input["outputs"]["artifacts"].items():
            provisioned = copy.deepcopy(artifact_list["artifacts"][0])
            written = executor_output.get("artifacts", {}).get(key, {}).get("artifacts", [])
            if written:
                merge_runtime_artifact(written[0], provisioned)
            outputs[key] = [self.record.add(provisioned, run_id, task, key)]
        total = seconds + (driver_seconds or 0.0)
        return TaskRun(task, "container", total, 0, outputs, driver_seconds)


def merge_runtime_artifact(src: Mapping[str, Any], dst: dict[str, Any]) -> None:
    """KFP's ``mergeRuntimeArtifacts``: the URI if the task changed it, and its
    metadata over the provisioned artifact's."""
    if src.get("uri"):
        dst["uri"] = src["uri"]
    if src.get("metadata"):
        dst["metadata"] = {**dst.get("metadata", {}), **src["metadata"]}


def apply_driver_output(
    executor_input: Mapping[str, Any], driver_output: Mapping[str, Any]
) -> dict[str, Any]:
    """The ExecutorInput updated with what the preCacheCheck driver wrote: its
    parameter values over the task's parameters (both maps), its artifacts' metadata
    over the provisioned output artifacts."""
    updated = copy.deepcopy(dict(executor_input))
    inputs = updated["inputs"]
    for name, value in driver_output.get("parameterValues", {}).items():
        inputs["parameterValues"][name] = value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if float(value).is_integer():
                inputs["parameters"][name] = {"intValue": str(int(value))}
            else:
                inputs["parameters"][name] = {"doubleValue": value}
        else:
            inputs["parameters"][name] = {"stringValue": str(value)}
    for key, artifact_list in driver_output.get("artifacts", {}).items():
        written = artifact_list.get("artifacts", [])
        provisioned = updated["outputs"]["artifacts"].get(key, {}).get("artifacts", [])
        if written and provisioned:
            merge_runtime_artifact(written[0], provisioned[0])
    return updated
