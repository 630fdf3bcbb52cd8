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
* ``portable-external``: the same job server, with the SDK workers started by an
  EXTERNAL worker pool (``apache_beam.runners.worker.worker_pool_main``) at
  ``--environment_config`` (default ``localhost:50000``), as on a cluster. The pool
  starts each worker as ``python`` from its ``PATH``, in its own environment, so it
  must be started as ``worker_pool_env`` says. ``--sdk_worker_parallelism=N`` asks
  for N workers per job; Beam's Python job service ignores it (one worker per job),
  the job service of this module (``python -m pipeline.beam_runners --port P``)
  honours it.
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

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence

BEAM_RUNNERS = (
    "direct",
    "direct-mp",
    "portable",
    "portable-external",
    "flink",
    "spark",
    "dataflow",
)

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
    "portable-external": [
        "--runner=PortableRunner",
        "--job_endpoint=localhost:8099",
        "--environment_type=EXTERNAL",
        # 50000: the worker pool port Beam's own Flink and Spark guides use.
        "--environment_config=localhost:50000",
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


# The Beam options after which TFX's BaseBeamExecutor adds no package of its own
# (tfx.utils.dependency_utils.make_beam_dependency_flags checks these names).
_DEPENDENCY_OPTIONS = (
    "extra_package",
    "extra_packages",
    "setup_file",
    "requirements_file",
    "worker_harness_container_image",
    "sdk_container_image",
)
_SETUP_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def with_local_dependencies(args: Sequence[str], setup_py: str = _SETUP_PY) -> list[str]:
    """``args`` with ``--setup_file`` naming this project's ``setup.py`` when they run
    Beam's DirectRunner (named, or no ``--runner`` at all) and ship no dependency yet.

    Without a dependency option, every TFX Beam executor (ExampleGen, StatisticsGen,
    Transform, the Evaluator) copies TFX's installed tree and runs ``setup.py sdist``
    on it (``tfx_ephemeral``, for remote workers): about 3 s per component run, and a
    49 MB directory under the temp dir that nothing deletes. The DirectRunner's workers
    are this process or its children and need no package. (Beam 2.7x's DirectRunner
    first tries the Prism runner, whose environment would stage ``--setup_file``;
    ``without_prism_attempt`` leaves that attempt out.) Measured: 304.4 s against
    318.6 s for ``make run``'s command (docs/benchmarks.md). Other runners keep TFX's
    behaviour, and an installation without the source tree (no ``setup.py``) too."""
    args = list(args)
    names = {_name(arg) for arg in args}
    if not _runs_direct(args) or names & set(_DEPENDENCY_OPTIONS) or not os.path.isfile(setup_py):
        return args
    return [*args, f"--setup_file={setup_py}"]


# pipeline/direct_runner.py's class, by the dotted name Beam's --runner accepts (a
# string here, so that building arguments does not import Beam).
LOCAL_DIRECT_RUNNER = "pipeline.direct_runner.LocalDirectRunner"


def _runner(args: Sequence[str]) -> str:
    return next((a.split("=", 1)[1] for a in args if _name(a) == "runner" and "=" in a), "")


def _runs_direct(args: Sequence[str]) -> bool:
    return _runner(args) in ("", "DirectRunner", "direct", LOCAL_DIRECT_RUNNER)


def without_prism_attempt(args: Sequence[str]) -> list[str]:
    """``args`` with Beam's DirectRunner (named, or no ``--runner`` at all) replaced by
    ``LocalDirectRunner`` (pipeline/direct_runner.py): the same runner without its
    first attempt on the Prism runner, which fails here (no Prism binary, no download)
    after staging an sdist of this project, about 1 s per Beam pipeline. Only for
    executors on a machine with this package installed (the local runner, Airflow's
    tasks); other runners are left alone."""
    if not _runs_direct(args):
        return list(args)
    return [a for a in args if _name(a) != "runner"] + [f"--runner={LOCAL_DIRECT_RUNNER}"]


def worker_pool_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start Beam's worker pool in for ``portable-external``.

    The pool starts every SDK worker as plain ``python -c ...`` found on its ``PATH``,
    and the worker inherits the pool's environment, not the submitting run's. So this
    interpreter's directory goes first on ``PATH`` (the worker must import TFX and this
    project), and Keras 2 is selected as ``pipeline/__init__.py`` does for the run
    itself, since the Evaluator's workers load the trained model and TFX 1.16 needs
    Keras 2 wherever that happens."""
    env = dict(os.environ if environ is None else environ)
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(
        [bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]]
    )
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    return env


def worker_count(value: object) -> int:
    """``--sdk_worker_parallelism`` as the job service receives it (a string or a float:
    the option has no type and travels in a protobuf Struct) as a worker count; 0 means
    one per core, as Beam documents for this option."""
    try:
        count = int(float(str(value)))
    except (ValueError, OverflowError):
        raise ValueError(
            f"--sdk_worker_parallelism {value!r}: expected a whole number >= 0"
        ) from None
    if count < 0 or count != float(str(value)):
        raise ValueError(f"--sdk_worker_parallelism {value!r}: expected a whole number >= 0")
    return count or (os.cpu_count() or 1)


def start_job_service(port: int = 0, staging_dir: str | None = None):
    """Beam's Python job service (``LocalJobServicer``, what
    ``apache_beam.runners.portability.local_job_service_main`` serves) with one change:
    each job runs every stage on ``--sdk_worker_parallelism`` workers of its
    environment, splitting the stage's input between them.

    Beam's own job service runs a job with ``FnApiRunner.run_via_runner_api``, which
    leaves the runner at one worker whatever the options say (``sdk_worker_parallelism``
    is read only by the Java job servers of Flink and Spark, ``direct_num_workers``
    only by the DirectRunner). So an EXTERNAL worker pool is asked for one worker per
    job there; here it is asked for N, as Flink asks its pool. Uses the job type hook
    of ``LocalJobServicer`` and FnApiRunner's worker count (private): the tests in
    ``tests/pipeline/test_beam_runners_portable.py`` show when a Beam upgrade breaks
    it. Returns ``(servicer, port)``; ``servicer.stop()`` ends it."""
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    class ParallelBeamJob(local_job_service.BeamJob):
        def _invoke_runner(self):
            options = self.pipeline_options()
            workers = worker_count(options.view_as(PortableOptions).sdk_worker_parallelism)
            self.set_state(beam_job_api_pb2.JobState.RUNNING)
            runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
            runner._num_workers = workers
            return runner.run_via_runner_api(self._pipeline_proto, options)

    servicer = local_job_service.LocalJobServicer(staging_dir, beam_job_type=ParallelBeamJob)
    return servicer, servicer.start_grpc_server(port)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pipeline.beam_runners --port P``: the job service of
    ``start_job_service`` until interrupted."""
    import logging

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.beam_runners",
        description="Beam's local job service, running each job's stages on "
        "--sdk_worker_parallelism workers (for --beam portable-external).",
    )
    parser.add_argument("--port", type=int, default=8099, help="job API port (0: any free one)")
    parser.add_argument(
        "--staging-dir", help="where jobs' artifacts are staged (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    servicer, port = start_job_service(args.port, args.staging_dir)
    print(f"Listening for beam jobs on port {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        servicer.stop()


if __name__ == "__main__":
    main()
