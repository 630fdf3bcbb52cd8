"""Code fingerprints (``pipeline/fingerprints.py``): the import walk on small packages,
the real components' closures, the exec properties they land in, and, end to end, which
components the real pipeline re-runs after an edit to each file of ours."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.fingerprints import (
    COMPONENT_CODE,
    component_fingerprints,
    fingerprint,
    module_closure,
)
from pipeline.pipeline import COMPONENT_ORDER
from pipeline.settings import RuntimeSettings, SettingsError
from tests.pipeline_fixture import fail_text, pipeline_args

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "components", "report", "serving", "trainer", "pipeline", "cli")


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")


# ------------------------------------------------------------------ the import walk


@pytest.fixture
def tree(tmp_path):
    """trainer.entry -> trainer.middle (relative import) -> ingest.leaf (in a function
    body); ingest.unrelated imported by no one; a lazy __getattr__ in a parent package."""
    _write(tmp_path, "trainer/__init__.py", "import os\n")
    _write(tmp_path, "trainer/entry.py", "import json\nfrom . import middle\n")
    _write(tmp_path, "trainer/middle.py", "def f():\n    from ingest import leaf\n")
    _write(tmp_path, "ingest/__init__.py", "")
    _write(tmp_path, "ingest/leaf.py", "X = 1\n")
    _write(tmp_path, "ingest/unrelated.py", "Y = 1\n")
    _write(
        tmp_path,
        "components/__init__.py",
        "def __getattr__(name):\n    from ingest import unrelated\n    return unrelated\n",
    )
    _write(tmp_path, "components/runner.py", "from trainer.entry import *\n")
    return tmp_path


def test_closure_follows_imports_transitively_and_into_function_bodies(tree):
    assert [p.as_posix() for p in module_closure("trainer.entry", tree)] == [
        "ingest/__init__.py",
        "ingest/leaf.py",
        "trainer/__init__.py",
        "trainer/entry.py",
        "trainer/middle.py",
    ]


def test_edit_two_imports_away_changes_the_fingerprint_and_an_unrelated_one_does_not(tree):
    before = fingerprint("trainer.entry", tree)
    assert len(before) == 16 and int(before, 16) >= 0
    _append(tree / "ingest" / "unrelated.py", "# edited")
    assert fingerprint("trainer.entry", tree) == before
    _append(tree / "ingest" / "leaf.py", "# edited")
    after = fingerprint("trainer.entry", tree)
    assert after != before
    assert fingerprint("trainer.entry", tree) == after  # stable


def test_parent_package_runs_but_its_lazy_imports_are_not_followed(tree):
    closure = [p.as_posix() for p in module_closure("components.runner", tree)]
    assert "components/__init__.py" in closure and "ingest/leaf.py" in closure
    assert "ingest/unrelated.py" not in closure
    before = fingerprint("components.runner", tree)
    _append(tree / "components" / "__init__.py", "# edited")
    assert fingerprint("components.runner", tree) != before


def test_package_data_is_part_of_the_fingerprint(tmp_path):
    _write(tmp_path, "report/__init__.py", "")
    template = _write(tmp_path, "report/templates/page.html", "<p>{{ x }}</p>\n")
    _write(tmp_path, "report/templates/notes.txt", "not a template\n")
    assert [p.as_posix() for p in module_closure("report", tmp_path)] == [
        "report/__init__.py",
        "report/templates/page.html",
    ]
    before = fingerprint("report", tmp_path)
    _append(tmp_path / "report" / "templates" / "notes.txt", "edited")
    assert fingerprint("report", tmp_path) == before
    _append(template, "<!-- edited -->")
    assert fingerprint("report", tmp_path) != before


def test_a_module_not_of_ours_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"module 'json': expected a module of ours under "):
        module_closure("json", tmp_path)
    with pytest.raises(ValueError, match=r"module 'trainer.missing': expected a module of ours"):
        module_closure("trainer.missing")


# ------------------------------------------------------------- the real components


def _owners(relative: str) -> set[str]:
    """The components whose fingerprint covers ``relative``."""
    return {c for c, m in COMPONENT_CODE.items() if Path(relative) in module_closure(m)}


def test_each_file_belongs_to_the_components_that_run_it():
    assert _owners("trainer/transform.py") == {"Transform", "Trainer"}
    assert _owners("trainer/model_fn.py") == {"Trainer"}
    # trainer/export.py takes the name of ExampleGen's lineage file from it.
    assert _owners("components/example_gen/executor.py") == {"ExampleGen", "Trainer"}
    assert _owners("components/data_validator/executor.py") == {"ExampleValidator"}
    # The drift profile is also what the Trainer records about its training data.
    assert _owners("components/data_validator/profile.py") == {"ExampleValidator", "Trainer"}
    assert _owners("components/pusher/executor.py") == {"Pusher"}
    assert _owners("serving/publish.py") == {"Pusher"}
    # Imported inside a function of serving/publish.py: conservatively the Pusher's too.
    assert _owners("serving/server.py") == {"Pusher"}
    assert _owners("components/evaluation_report/executor.py") == {"EvaluationReport"}
    assert _owners("report/templates/report.html") == {"EvaluationReport"}
    assert _owners("components/__init__.py") == set(COMPONENT_CODE) - {"Transform"}
    for unused in ("cli/commands/versions.py", "pipeline/pipeline.py", "pipeline/fingerprints.py"):
        assert _owners(unused) == set(), unused


def test_settings_carry_the_fingerprints_into_every_component(tmp_path):
    from pipeline.config import RunConfig, code_fingerprint
    from pipeline.pipeline import create_pipeline
    from pipeline.settings import PipelinePaths, settings_from_config

    settings = settings_from_config(RunConfig(dataset="mnist"))
    prints = component_fingerprints()
    assert dict(settings.runtime.code_fingerprints) == prints
    assert settings.training.code_fingerprint == prints["Trainer"] == code_fingerprint()
    assert len(set(prints.values())) == len(prints)
    paths = PipelinePaths("p", str(tmp_path / "r"), str(tmp_path / "d"), str(tmp_path / "s"))
    by_id = {c.id: c.exec_properties for c in create_pipeline(paths, settings).components}
    custom = {k: json.loads(by_id[k]["custom_config"]) for k in ("Transform", "Trainer", "Pusher")}
    assert {k: v["code_fingerprint"] for k, v in custom.items()} == {
        k: prints[k] for k in ("Transform", "Trainer", "Pusher")
    }
    assert custom["Pusher"]["keep_versions"] == 5
    example_gen = json.loads(by_id["ExampleGen"]["custom_config"])["custom_config"]
    assert example_gen["value"] == {"code_fingerprint": prints["ExampleGen"]}
    assert by_id["ExampleValidator"]["code_fingerprint"] == prints["ExampleValidator"]
    assert by_id["EvaluationReport"]["code_fingerprint"] == prints["EvaluationReport"]


def test_runtime_settings_refuse_fingerprints_of_unknown_components():
    with pytest.raises(SettingsError, match=r"^RuntimeSettings.code_fingerprints = \{'Tuner'"):
        RuntimeSettings(code_fingerprints={"Tuner": "ab"})
    with pytest.raises(SettingsError, match=r"RuntimeSettings.code_fingerprints = \{'Pusher': 1\}"):
        RuntimeSettings(code_fingerprints={"Pusher": 1})


# ------------------------------------------------------------------ end to end


def _copy_sources(dest: Path) -> None:
    for package in PACKAGES:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / package, dest / package, ignore=ignore)
    for name in ("setup.py", "pyproject.toml"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)


def _run(args: list[str], src: Path) -> subprocess.CompletedProcess:
    # The copy first on the path (and the working directory), so that it, not the
    # editable install of the repository, is what every component imports.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(src))
    return subprocess.run(
        [sys.executable, *args], cwd=src, env=env, capture_output=True, text=True, timeout=900
    )


def _ran(metadata: Path) -> set[str]:
    """The components that executed (COMPLETE) in the latest run; all others must be CACHED."""
    from pipeline.run_summary import summarize_run

    states = {
        c.name: c.state
        for c in summarize_run(str(metadata), "mnist_cnn").components
        if not c.name.endswith("_resolver")
    }
    assert set(states) == set(COMPONENT_ORDER), states
    assert set(states.values()) <= {"COMPLETE", "CACHED"}, states
    return {name for name, state in states.items() if state == "COMPLETE"}


def _recorded_fingerprints(metadata: Path) -> dict[str, str]:
    """The code fingerprint each component of the latest run carried, from ML Metadata."""
    from pipeline.run_summary import latest_run_context, node_name_of, open_store

    store = open_store(str(metadata))
    run = latest_run_context(store, "mnist_cnn")
    found = {}
    for execution in store.get_executions_by_context(run.id):
        name = node_name_of(store, execution.id, "mnist_cnn")
        props = execution.custom_properties
        if "code_fingerprint" in props:
            found[name] = props["code_fingerprint"].string_value
        elif "custom_config" in props:
            config = json.loads(props["custom_config"].string_value)
            inner = config.get("custom_config", {}).get("value", config)
            found[name] = inner.get("code_fingerprint")
    return {k: v for k, v in found.items() if v}


# Each row: the file edited (cumulatively, in one copy of the sources) before a run,
# and the components that run should execute; every other one must be CACHED.
# A component re-runs when its own code changed or when an input artifact is new
# (a re-run upstream component publishes new artifacts, even with equal content).
# Every model is blessed and pushed (no floor, any accuracy change allowed), so each
# row's baseline is the previous row's pushed model; that is not a new input when the
# run that pushed it already checked the same examples / model (the served-model
# resolvers hand back the baseline of that check), so it changes nothing below.
ALL = frozenset(COMPONENT_ORDER)
AFTER_TRAINER = {"Evaluator", "Pusher", "EvaluationReport"}
EDITS = [
    (None, set()),
    ("trainer/transform.py", {"Transform", "Trainer", *AFTER_TRAINER}),
    ("trainer/model_fn.py", {"Trainer", *AFTER_TRAINER}),
    ("components/example_gen/executor.py", ALL),
    ("components/data_validator/executor.py", {"ExampleValidator"}),
    ("components/pusher/executor.py", {"Pusher", "EvaluationReport"}),
    ("components/evaluation_report/executor.py", {"EvaluationReport"}),
    ("report/templates/report.html", {"EvaluationReport"}),
    # Code that no component runs.
    ("cli/commands/versions.py", set()),
]


@pytest.mark.e2e
@pytest.mark.slow
def test_an_edit_reruns_exactly_the_components_that_run_the_edited_file(tmp_path):
    src = tmp_path / "src"
    _copy_sources(src)
    where = _run(
        [
            "-c",
            "import cli, components.example_gen.executor as e, trainer.transform as t, "
            "report, serving.publish as p; print(cli.__file__, e.__file__, t.__file__, "
            "report.__file__, p.__file__)",
        ],
        src,
    )
    assert where.returncode == 0, fail_text(where)
    for path in where.stdout.split():
        assert Path(path).is_relative_to(src), where.stdout

    args = [
        "-m",
        "cli",
        *pipeline_args(
            "mnist", tmp_path, "--epochs", "1", "--min-accuracy", "0", "--max-accuracy-drop", "1"
        ),
    ]
    metadata = tmp_path / "out" / "mnist_cnn" / "metadata.sqlite"
    measured = []
    for edited, expected in [("(first run)", ALL), *EDITS]:
        if edited and not edited.startswith("("):
            path = src / edited
            _append(path, "<!-- edited -->" if path.suffix == ".html" else "# edited")
        started = time.monotonic()
        proc = _run(args, src)
        assert proc.returncode == 0, fail_text(proc)
        ran = _ran(metadata)
        measured.append((edited, sorted(ran), round(time.monotonic() - started)))
        assert ran == set(expected), (edited, measured)
        # What the components carried is the fingerprint of the copy as it is now.
        recorded = _recorded_fingerprints(metadata)
        assert recorded == component_fingerprints(src), (edited, recorded)
    print("\n".join(map(str, measured)))
