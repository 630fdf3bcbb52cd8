"""``--beam RUNNER``: the Beam pipeline arguments each runner needs.

Every TFX component that runs Beam (ExampleGen, StatisticsGen, Transform, the
Evaluator) gets the same ``beam_pipeline_args``. What must exist for each runner:

* ``direct``: nothing; Beam's DirectRunner in this process, one worker
  (``in_memory``). The default.
* ``direct-mp``: nothing; the DirectRunner with ``multi_processing`` workers, one
  per core unless ``--direct_num_workers`` is given.
* ``portable``: a Beam job server at ``--job_endpoint`` (default ``localhost:8099``);
  workers run in the submitting process (``LOOPBACK``) unless an
  ``--environment_type`` says otherwise.
* ``flink``: a Flink cluster at ``--flink_master`` (default ``localhost:8081``); the
  Flink job server is started by Beam from its jar (a download on first use).
* ``spark``: a Spark master at ``--spark_master_url`` (default ``local[2]``); the
  Spark job server likewise.
* ``dataflow``: a GCP project with Dataflow enabled, and ``--project``,
  ``--region`` and a ``--temp_location`` on GCS; workers need a container image
  with this package installed (``--sdk_container_image``, built from the
  Dockerfile).

Arguments given with ``--beam-arg`` are added after these and override a default
of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence

BEAM_RUNNERS = ("direct", "direct-mp", "portable", "flink", "spark", "dataflow")

_DEFAULTS: dict[str, list[str]] = {
    "direct": [
        "--runner=DirectRunner",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
    ],
    "direct-mp": [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        # 0: as many workers as the machine has cores.
        "--direct_num_workers=0",
    ],
    "portable": [
        "--runner=PortableRunner",
        "--job_endpoint=localhost:8099",
        "--environment_type=LOOPBACK",
    ],
    "flink": [
        "--runner=FlinkRunner",
        "--flink_master=localhost:8081",
        "--environment_type=LOOPBACK",
    ],
    "spark": [
        "--runner=SparkRunner",
        "--spark_master_url=local[2]",
        "--environment_type=LOOPBACK",
    ],
    "dataflow": ["--runner=DataflowRunner"],
}
_REQUIRED = {"dataflow": ("project", "region", "temp_location")}


def _name(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("-")


def beam_pipeline_args(runner: str, extra: Sequence[str] = ()) -> list[str]:
    """The runner's arguments with ``extra`` (``--name=value``) added, an extra
    argument replacing a default of the same name. ValueError for an unknown runner,
    a malformed extra argument, or a required argument missing."""
    if runner not in _DEFAULTS:
        raise ValueError(f"--beam {runner!r}: expected one of {', '.join(BEAM_RUNNERS)}")
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"--beam-arg {arg!r}: expected --name=value")
    overridden = {_name(arg) for arg in extra}
    args = [arg for arg in _DEFAULTS[runner] if _name(arg) not in overridden]
    args.extend(extra)
    present = {_name(arg) for arg in args}
    missing = [name for name in _REQUIRED.get(runner, ()) if name not in present]
    if missing:
        flags = " ".join(f"--beam-arg=--{name}=..." for name in missing)
        raise ValueError(f"--beam {runner} needs {', '.join(missing)}: pass {flags}")
    return args
