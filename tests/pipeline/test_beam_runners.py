"""``--beam RUNNER``: each runner's documented Beam arguments, overrides, and the
errors for what is missing (pipeline/beam_runners.py), and the CLI passing them on."""

from __future__ import annotations

import pytest

from cli.main import build_parser
from pipeline.beam_runners import BEAM_RUNNERS, beam_pipeline_args
from pipeline.config import DEFAULT_BEAM_ARGS
from pipeline.run_flags import partial_run_config

EXPECTED = {
    "direct": [
        "--runner=DirectRunner",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
    ],
    "direct-mp": [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
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
}


@pytest.mark.parametrize("runner", sorted(EXPECTED))
def test_each_runner_has_its_documented_arguments(runner):
    assert beam_pipeline_args(runner) == EXPECTED[runner]


def test_every_runner_is_covered():
    assert set(BEAM_RUNNERS) == {*EXPECTED, "dataflow"}


def test_direct_is_the_pipeline_default():
    assert list(DEFAULT_BEAM_ARGS) == beam_pipeline_args("direct")


def test_extra_arguments_replace_defaults_of_the_same_name():
    args = beam_pipeline_args("flink", ["--flink_master=flink:8081", "--parallelism=4"])
    assert args == [
        "--runner=FlinkRunner",
        "--environment_type=LOOPBACK",
        "--flink_master=flink:8081",
        "--parallelism=4",
    ]
    assert beam_pipeline_args("direct-mp", ["--direct_num_workers=2"])[-1] == (
        "--direct_num_workers=2"
    )


def test_dataflow_needs_project_region_and_temp_location():
    with pytest.raises(ValueError, match=r"--beam dataflow needs project, region, temp_location"):
        beam_pipeline_args("dataflow")
    with pytest.raises(ValueError, match=r"needs temp_location: pass --beam-arg=--temp_location"):
        beam_pipeline_args("dataflow", ["--project=p", "--region=europe-west4"])
    args = beam_pipeline_args(
        "dataflow",
        [
            "--project=p",
            "--region=europe-west4",
            "--temp_location=gs://b/tmp",
            "--sdk_container_image=europe-docker.pkg.dev/p/r/mnist-tfx:1",
        ],
    )
    assert args[0] == "--runner=DataflowRunner" and "--temp_location=gs://b/tmp" in args


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match=r"--beam 'samza': expected one of direct, direct-mp"):
        beam_pipeline_args("samza")
    with pytest.raises(ValueError, match=r"--beam-arg 'parallelism': expected --name=value"):
        beam_pipeline_args("flink", ["parallelism"])


def test_cli_passes_the_runners_arguments_to_the_pipeline():
    args = build_parser().parse_args(
        ["run", "--beam", "direct-mp", "--beam-arg=--direct_num_workers=2"]
    )
    config = partial_run_config(args)
    assert list(config.beam_args) == [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ]
    default = partial_run_config(build_parser().parse_args(["run"]))
    assert default.beam_args == DEFAULT_BEAM_ARGS


@pytest.mark.e2e
@pytest.mark.slow
def test_direct_multi_processing_runs_the_whole_pipeline(tmp_path):
    """The fixture through every component with Beam's multi-processing DirectRunner
    (two worker processes), for real."""
    import json

    from tests.pipeline_fixture import fail_text, pipeline_args, run_cli

    summary_path = tmp_path / "summary.json"
    proc = run_cli(
        *pipeline_args("mnist", tmp_path, "--summary-json", str(summary_path)),
        "--beam",
        "direct-mp",
        "--beam-arg=--direct_num_workers=2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, fail_text(proc)
    summary = json.loads(summary_path.read_text())
    assert {c["state"] for c in summary["components"]} == {"COMPLETE"}
    assert summary["example_counts"] == {"train": 275, "validation": 25, "test": 200}
    assert summary["pushed"] is True


def test_direct_runners_name_this_setup_py_so_tfx_builds_no_package(tmp_path, monkeypatch):
    from tfx.utils import dependency_utils

    from pipeline.beam_runners import _SETUP_PY, with_local_dependencies

    for runner in ("direct", "direct-mp"):
        args = with_local_dependencies(beam_pipeline_args(runner))
        assert args == [*EXPECTED[runner], f"--setup_file={_SETUP_PY}"]
    assert with_local_dependencies(["--direct_num_workers=1"])[-1] == f"--setup_file={_SETUP_PY}"
    # TFX's own check then adds nothing and builds nothing in the temp dir.
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    args = with_local_dependencies(beam_pipeline_args("direct"))
    assert dependency_utils.make_beam_dependency_flags(args) == args
    assert list(tmp_path.iterdir()) == []


def test_other_runners_and_given_dependencies_are_left_alone(tmp_path):
    from pipeline.beam_runners import with_local_dependencies

    for runner in ("portable", "portable-external", "flink", "spark"):
        assert with_local_dependencies(beam_pipeline_args(runner)) == EXPECTED[runner]
    given = [*EXPECTED["direct"], "--extra_package=/pkgs/x.tar.gz"]
    assert with_local_dependencies(given) == given
    # No setup.py (an installed wheel without the source tree): TFX's behaviour.
    assert (
        with_local_dependencies(EXPECTED["direct"], str(tmp_path / "setup.py"))
        == EXPECTED["direct"]
    )


def test_local_direct_runner_replaces_only_the_direct_runner():
    from pipeline.beam_runners import LOCAL_DIRECT_RUNNER, without_prism_attempt
    from pipeline.direct_runner import RUNNER_NAME

    assert LOCAL_DIRECT_RUNNER == RUNNER_NAME
    for runner in ("direct", "direct-mp"):
        args = without_prism_attempt(beam_pipeline_args(runner))
        assert args == [*EXPECTED[runner][1:], f"--runner={RUNNER_NAME}"]
        assert without_prism_attempt(args) == args
    assert without_prism_attempt(["--direct_num_workers=1"]) == [
        "--direct_num_workers=1",
        f"--runner={RUNNER_NAME}",
    ]
    for runner in ("portable", "portable-external", "flink", "spark"):
        assert without_prism_attempt(beam_pipeline_args(runner)) == EXPECTED[runner]


def _count_pipeline(args, tmp_path, monkeypatch):
    """Runs a small real Beam pipeline under ``args`` with PrismRunner.run_pipeline
    replaced by a spy that records the attempt and fails it (as it fails on a
    machine that cannot fetch the Prism binary); returns (the count it wrote, the
    attempts, what it left in the temp dir)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import prism_runner

    attempts = []

    def refuse(self, pipeline, options):
        attempts.append(options.view_as(beam.options.pipeline_options.SetupOptions).setup_file)
        raise RuntimeError("no Prism binary in this test")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    temp = tmp_path / "temp"
    temp.mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    out = tmp_path / "count"
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        _ = (
            p
            | beam.Create(range(1000))
            | beam.Map(lambda x: x % 7)
            | beam.combiners.Count.PerElement()
            | beam.Map(lambda kv: f"{kv[0]} {kv[1]}")
            | beam.io.WriteToText(str(out), shard_name_template="")
        )
    counts = dict(line.split() for line in out.read_text().splitlines())
    return counts, attempts, sorted(p.name for p in temp.iterdir())


def test_local_direct_runner_runs_on_beam_without_trying_prism(tmp_path, monkeypatch):
    from pipeline.beam_runners import with_local_dependencies, without_prism_attempt

    local = without_prism_attempt(with_local_dependencies(beam_pipeline_args("direct")))
    counts, attempts, left = _count_pipeline(local, tmp_path / "local", monkeypatch)
    assert counts == {str(k): str(143 if k < 6 else 142) for k in range(7)}
    assert attempts == []
    assert left == []
    # Beam's own DirectRunner, same arguments otherwise: it offers the pipeline to
    # Prism first (with our setup.py to stage), then falls back to the same result.
    beams = with_local_dependencies(beam_pipeline_args("direct"))
    counts, attempts, _ = _count_pipeline(beams, tmp_path / "beam", monkeypatch)
    assert counts == {str(k): str(143 if k < 6 else 142) for k in range(7)}
    assert len(attempts) == 1 and attempts[0].endswith("setup.py")
