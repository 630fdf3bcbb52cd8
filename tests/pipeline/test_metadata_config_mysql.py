"""ML Metadata in MySQL: the ``--metadata`` parser (``pipeline/metadata_config.py``),
then the real pipeline on the committed MNIST fixture with its metadata in a real
MariaDB server (``tests/mariadb.py``), beside the same pipeline on SQLite at the
same time; the run summary and version lineage read from each must agree, and a
second run on the MySQL store while the first holds it is refused.

Run as a script, this module is the pipeline run the tests start in subprocesses:
``python -m tests.pipeline.test_metadata_config_mysql METADATA DATA_ROOT OUTPUT_ROOT``
(it prints "locked" once it holds the store, which the tests wait for).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from pipeline.metadata_config import (
    DEFAULT_MYSQL_PORT,
    PASSWORD_ENV,
    MetadataConnectionError,
    describe_metadata,
    exclusive_mysql_lock,
    exclusive_store,
    is_mysql,
    is_sqlite,
    metadata_connection_config,
    mysql_lock_name,
    open_metadata_store,
    redact_password,
    sqlite_path,
)
from pipeline.metadata_lock import MetadataBusyError
from tests.mariadb import MariaDBServer, mariadb_server  # noqa: F401 - the session fixture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
THIS_MODULE = "tests.pipeline.test_metadata_config_mysql"
DATASET = "mnist"
PIPELINE_NAME = "mnist_cnn"
RESOLVERS = ("served_model_data_resolver", "served_model_resolver")
EXIT_BUSY = 4


# ------------------------------------------------------------------ the parser


def test_plain_path_is_sqlite_resolved_like_the_local_runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = metadata_connection_config("out/metadata.sqlite")
    assert is_sqlite(config) and not is_mysql(config)
    assert config.sqlite.filename_uri == str(tmp_path / "out" / "metadata.sqlite")
    assert sqlite_path(config) == tmp_path / "out" / "metadata.sqlite"
    assert describe_metadata(config) == str(tmp_path / "out" / "metadata.sqlite")
    # A Path works as well as a string, and parsing creates nothing.
    assert metadata_connection_config(Path("out/metadata.sqlite")) == config
    assert not (tmp_path / "out").exists()


def test_sqlite_url_and_path_equal_tfxs_own_config(tmp_path):
    from tfx.orchestration import metadata

    path = tmp_path / "m" / "metadata.sqlite"
    expected = metadata.sqlite_metadata_connection_config(str(path))
    assert metadata_connection_config(f"sqlite://{path}") == expected
    assert metadata_connection_config(f"SQLite://{path}") == expected
    assert metadata_connection_config(str(path)) == expected


def test_mysql_url_equals_tfxs_own_config():
    from tfx.orchestration import metadata

    config = metadata_connection_config("mysql://ml:s3cret@db.example:3307/mlmd", environ={})
    assert is_mysql(config) and not is_sqlite(config) and sqlite_path(config) is None
    assert config == metadata.mysql_metadata_connection_config(
        host="db.example", port=3307, database="mlmd", username="ml", password="s3cret"
    )


def test_mysql_defaults_port_3306_and_no_password():
    config = metadata_connection_config("mysql://ml@db.example/mlmd", environ={})
    assert config.mysql.port == DEFAULT_MYSQL_PORT == 3306
    assert config.mysql.password == ""
    assert describe_metadata(config) == "mysql://ml@db.example:3306/mlmd"


def test_mysql_password_from_the_environment_unless_in_the_url():
    environ = {PASSWORD_ENV: "from-env"}
    assert metadata_connection_config("mysql://ml@h/db", environ).mysql.password == "from-env"
    assert metadata_connection_config("mysql://ml:url@h/db", environ).mysql.password == "url"
    # An explicit empty password in the URL is kept.
    assert metadata_connection_config("mysql://ml:@h/db", environ).mysql.password == ""


def test_mysql_password_from_os_environ(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "exported")
    assert metadata_connection_config("mysql://ml@h/db").mysql.password == "exported"


def test_mysql_user_and_password_are_percent_decoded_and_ipv6_hosts_work():
    config = metadata_connection_config("mysql://m%40l:p%40ss%2Fw@[::1]:33060/db", environ={})
    assert (config.mysql.user, config.mysql.password) == ("m@l", "p@ss/w")
    assert (config.mysql.host, config.mysql.port) == ("::1", 33060)
    assert describe_metadata(config) == "mysql://m@l@[::1]:33060/db"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty value"),
        ("postgresql://ml@h/db", "unsupported scheme 'postgresql'"),
        ("mysql:ml@h/db", "needs '://'"),
        ("sqlite:metadata.sqlite", "needs '://'"),
        ("sqlite://host/metadata.sqlite", "absolute path"),
        ("mysql://h/db", "no user name"),
        ("mysql://ml@/db", "no host"),
        ("mysql://ml@h", "no database name"),
        ("mysql://ml@h/", "no database name"),
        ("mysql://ml@h/db/more", "database name 'db/more'"),
        ("mysql://ml@h/my-db", "database name 'my-db'"),
        ("mysql://ml@h:port/db", "port must be a number"),
        ("mysql://ml@h:70000/db", "port must be a number"),
        ("mysql://ml@h:0/db", "port must be a number"),
        ("mysql://ml@h/db?ssl=1", "options after '?'"),
        ("mysql://ml:pa/ss@h/db", "must be written %2F"),
    ],
)
def test_bad_values_name_the_value_the_problem_and_the_forms(value, problem):
    with pytest.raises(ValueError) as error:
        metadata_connection_config(value, environ={})
    message = str(error.value)
    # The value as given, but for a password (pa/ss here), which shows as ***.
    assert f"--metadata {redact_password(value)!r}" in message
    assert "pa/ss" not in message
    assert problem in message
    assert "mysql://user[:password]@host[:port]/database" in message
    assert "sqlite:///" in message and PASSWORD_ENV in message


def test_errors_and_descriptions_never_show_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError) as error:
        metadata_connection_config("mysql://ml:Hunter2@h:port/db", environ={})
    assert "Hunter2" not in str(error.value)
    assert "mysql://ml:***@h:port/db" in str(error.value)
    config = metadata_connection_config("mysql://ml:Hunter2@h/db", environ={})
    assert "Hunter2" not in describe_metadata(config)
    assert "Hunter2" not in caplog.text


def test_redact_password():
    assert redact_password("mysql://u:p@ss@h:1/db") == "mysql://u:***@h:1/db"
    assert redact_password("mysql://u@h/db") == "mysql://u@h/db"
    assert redact_password("/a/b:c@d") == "/a/b:c@d"
    assert redact_password("sqlite:///a/b:c@d") == "sqlite:///a/b:c@d"
    # Malformed URLs hide the password too: a '/' in it, or no '//'.
    assert redact_password("mysql://u:pa/ss@h/db") == "mysql://u:***@h/db"
    assert redact_password("mysql:u:pw@h/db") == "mysql:u:***@h/db"


def test_lock_names_fit_mysqls_64_characters():
    short = metadata_connection_config("mysql://u@h/mlmd", environ={})
    assert mysql_lock_name(short) == "mnist_tfx.metadata.mlmd"
    long = metadata_connection_config(f"mysql://u@h/{'d' * 64}", environ={})
    assert len(mysql_lock_name(long)) == 64
    other = metadata_connection_config(f"mysql://u@h/{'d' * 63}e", environ={})
    assert mysql_lock_name(other) != mysql_lock_name(long)


# --------------------------------------------------- the pipeline run (a script)


def run_pipeline(metadata: str, data_root: Path, output_root: Path) -> None:
    """The pipeline exactly as ``mnist-tfx run --metadata METADATA`` builds it (with the
    e2e tests' small settings); the lock is taken by ``main`` so the test can see it."""
    from tfx import v1 as tfx

    from pipeline.config import RunConfig
    from pipeline.local_runner import build_pipeline

    run = RunConfig(
        dataset=DATASET,
        output_root=output_root,
        min_accuracy=0.4,
        min_class_accuracy=0,
        hparams={"epochs": 3, "batch_size": 50},
        metadata_path=metadata,
    )
    pipeline = build_pipeline(run, data_root)
    tfx.orchestration.LocalDagRunner().run(pipeline)


def main(argv: list[str]) -> int:
    """Run the pipeline alone on the store ``argv[0]`` names; exit 4 if it is busy."""
    metadata, data_root, output_root = argv
    config = metadata_connection_config(metadata)
    try:
        with exclusive_store(config):
            print("locked", flush=True)
            run_pipeline(metadata, Path(data_root), Path(output_root))
    except MetadataBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BUSY
    return 0


# ------------------------------------------------- the real run on MariaDB


@dataclass
class Finished:
    returncode: int
    stderr: str
    seconds: float


@dataclass
class TwinRuns:
    """The pipeline on MySQL and on SQLite, started together on the same converted data."""

    server: MariaDBServer
    url: str
    config: object
    mysql_root: Path
    sqlite_root: Path
    mysql: Finished
    sqlite: Finished
    busy_error: str
    second_run: subprocess.CompletedProcess
    lock_free_after: bool

    @property
    def sqlite_metadata(self) -> Path:
        return self.sqlite_root / PIPELINE_NAME / "metadata.sqlite"

    def serving_dir(self, root: Path) -> Path:
        return root / "serving" / DATASET


def _start(metadata: str, data_root: Path, root: Path, env: dict) -> subprocess.Popen:
    root.mkdir(parents=True)
    with (root / "stderr.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", THIS_MODULE, metadata, str(data_root), str(root)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=root,
        )


def _finish(procs: dict[str, subprocess.Popen], roots: dict[str, Path], started: float):
    """Wait for every process; each one's result with its own wall time."""
    finished: dict[str, Finished] = {}
    deadline = started + 900
    while len(finished) < len(procs):
        for name, proc in procs.items():
            if name not in finished and proc.poll() is not None:
                stderr = (roots[name] / "stderr.log").read_text()
                finished[name] = Finished(proc.returncode, stderr, time.monotonic() - started)
        if time.monotonic() > deadline:
            running = sorted(set(procs) - set(finished))
            pytest.fail(f"pipeline runs still going after 900 s: {running}")
        time.sleep(0.2)
    return finished


def fail_text(finished) -> str:
    return f"exit {finished.returncode}\nstderr:\n{finished.stderr[-6000:]}"


@pytest.fixture(scope="module")
def twin_runs(mariadb_server, tmp_path_factory) -> TwinRuns:  # noqa: F811
    from pipeline.config import RunConfig
    from pipeline.local_runner import prepare_data

    root = tmp_path_factory.mktemp("twin")
    database = mariadb_server.create_database("mnist_tfx_run")
    url = mariadb_server.url(database, with_password=False)
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_USE_LEGACY_KERAS="1",
        # ``python -m tests.pipeline...`` from a temporary working directory.
        PYTHONPATH=str(REPO),
        **{PASSWORD_ENV: mariadb_server.password},
    )
    config = metadata_connection_config(url, environ=env)
    data_root = prepare_data(
        RunConfig(dataset=DATASET, source=str(FIXTURES / DATASET), data_dir=root / "data")
    )
    mysql_root, sqlite_root = root / "mysql", root / "sqlite"
    started = time.monotonic()
    mysql_proc = _start(url, data_root, mysql_root, env)
    sqlite_proc = _start(
        str(sqlite_root / PIPELINE_NAME / "metadata.sqlite"), data_root, sqlite_root, env
    )
    try:
        if mysql_proc.stdout.readline().strip() != "locked":
            mysql_proc.wait()
            pytest.fail(f"the MySQL run did not start: {(mysql_root / 'stderr.log').read_text()}")
        # The first run holds the store: a second one, in this process or a new
        # process, is refused at once.
        with pytest.raises(MetadataBusyError) as busy, exclusive_mysql_lock(config):
            pass
        second_root = root / "second"
        second_root.mkdir()
        second_run = subprocess.run(
            [sys.executable, "-m", THIS_MODULE, url, str(data_root), str(second_root)],
            capture_output=True,
            text=True,
            env=env,
            cwd=second_root,
            timeout=120,
        )
        runs = _finish(
            {"mysql": mysql_proc, "sqlite": sqlite_proc},
            {"mysql": mysql_root, "sqlite": sqlite_root},
            started,
        )
    finally:
        for proc in (mysql_proc, sqlite_proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    try:
        with exclusive_mysql_lock(config):
            lock_free_after = True
    except MetadataBusyError:
        lock_free_after = False
    print(
        f"\npipeline runs started together: on MySQL {runs['mysql'].seconds:.1f} s, "
        f"on SQLite {runs['sqlite'].seconds:.1f} s"
    )
    return TwinRuns(
        server=mariadb_server,
        url=url,
        config=config,
        mysql_root=mysql_root,
        sqlite_root=sqlite_root,
        mysql=runs["mysql"],
        sqlite=runs["sqlite"],
        busy_error=str(busy.value),
        second_run=second_run,
        lock_free_after=lock_free_after,
    )


def _state_name(execution) -> str:
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


@pytest.mark.e2e
@pytest.mark.slow
def test_every_component_ran_once_with_its_metadata_in_mysql(twin_runs):
    from pipeline.pipeline import COMPONENT_ORDER

    assert twin_runs.mysql.returncode == 0, fail_text(twin_runs.mysql)
    assert twin_runs.sqlite.returncode == 0, fail_text(twin_runs.sqlite)
    # Nothing of the MySQL run's metadata went to a SQLite file.
    assert not list(twin_runs.mysql_root.rglob("*.sqlite"))
    store = open_metadata_store(twin_runs.config)
    assert [c.name for c in store.get_contexts_by_type("pipeline")] == [PIPELINE_NAME]
    assert len(store.get_contexts_by_type("pipeline_run")) == 1
    for component in (*COMPONENT_ORDER, *RESOLVERS):
        node = store.get_context_by_type_and_name("node", f"{PIPELINE_NAME}.{component}")
        assert node is not None, component
        executions = store.get_executions_by_context(node.id)
        assert [_state_name(e) for e in executions] == ["COMPLETE"], component


@pytest.mark.e2e
@pytest.mark.slow
def test_the_blessed_model_was_pushed(twin_runs):
    from pipeline.run_summary import custom_property
    from serving.publish import list_versions

    serving = twin_runs.serving_dir(twin_runs.mysql_root)
    (version,) = list_versions(str(serving))
    store = open_metadata_store(twin_runs.config)
    (blessing,) = store.get_artifacts_by_type("ModelBlessing")
    assert custom_property(blessing, "blessed") == 1
    (pushed,) = store.get_artifacts_by_type("PushedModel")
    assert custom_property(pushed, "pushed") == 1
    assert custom_property(pushed, "pushed_version") == str(version)
    assert custom_property(pushed, "pushed_destination") == str((serving / str(version)).resolve())
    assert (serving / str(version) / "saved_model.pb").is_file()


def _proposed_open_store(metadata: str):
    """A store from any ``--metadata`` value, as ``pipeline.run_summary.open_store`` opens it."""
    return open_metadata_store(metadata_connection_config(metadata))


def _summary_view(summary, root: Path) -> dict:
    """What must not depend on the store: all but run ids, times and the version
    number, with paths relative to the run's output root."""
    view = asdict(summary)
    view["components"] = [(c["name"], c["state"]) for c in view["components"]]
    for volatile in ("run_id", "pushed_version", "pushed_path", "wall_seconds"):
        view.pop(volatile)
    training = view.pop("training") or {}
    view["training"] = {
        key: training.get(key) for key in ("epochs", "steps", "batch_size", "train_examples")
    }
    return json.loads(json.dumps(view).replace(str(root), "<output root>"))


@pytest.fixture
def both_summaries(twin_runs, monkeypatch):
    from ingest.datasets import get_dataset
    from pipeline import run_summary

    monkeypatch.setenv(PASSWORD_ENV, twin_runs.server.password)
    names = get_dataset(DATASET).class_names
    on_mysql = run_summary.summarize_run(twin_runs.url, PIPELINE_NAME, names)
    on_sqlite = run_summary.summarize_run(str(twin_runs.sqlite_metadata), PIPELINE_NAME, names)
    return on_mysql, on_sqlite


@pytest.mark.e2e
@pytest.mark.slow
def test_run_summary_reads_the_same_from_mysql_as_from_sqlite(twin_runs, both_summaries):
    from pipeline.pipeline import COMPONENT_ORDER

    on_mysql, on_sqlite = both_summaries
    assert _summary_view(on_mysql, twin_runs.mysql_root) == _summary_view(
        on_sqlite, twin_runs.sqlite_root
    )
    assert on_mysql.example_counts == {"train": 275, "validation": 25, "test": 200}
    assert on_mysql.blessed is True and on_mysql.pushed is True
    assert 0.4 <= on_mysql.accuracy <= 1.0
    serving = twin_runs.serving_dir(twin_runs.mysql_root).resolve()
    assert on_mysql.pushed_path == str(serving / on_mysql.pushed_version)
    assert {c.name for c in on_mysql.components} == {*COMPONENT_ORDER, *RESOLVERS}


def _lineage_ids(store, ids: dict[str, int]) -> dict[str, str]:
    """Each MLMD id of a lineage row as what it is in its own store: the node of an
    execution, the type of an artifact (the numbers themselves may differ)."""
    from pipeline.run_summary import node_name_of

    described = {}
    for key, mlmd_id in ids.items():
        if key.endswith("_execution"):
            described[key] = node_name_of(store, mlmd_id, PIPELINE_NAME)
        else:
            (artifact,) = store.get_artifacts_by_id([mlmd_id])
            (kind,) = store.get_artifact_types_by_id([artifact.type_id])
            described[key] = kind.name
    return described


@pytest.mark.e2e
@pytest.mark.slow
def test_version_lineage_reads_the_same_from_mysql_as_from_sqlite(
    twin_runs, both_summaries, monkeypatch
):
    from pipeline import lineage

    monkeypatch.setenv(PASSWORD_ENV, twin_runs.server.password)
    (on_mysql,) = lineage.list_version_lineage(
        twin_runs.url, str(twin_runs.serving_dir(twin_runs.mysql_root))
    )
    (on_sqlite,) = lineage.list_version_lineage(
        str(twin_runs.sqlite_metadata), str(twin_runs.serving_dir(twin_runs.sqlite_root))
    )
    mysql_store = open_metadata_store(twin_runs.config)
    sqlite_store = _proposed_open_store(str(twin_runs.sqlite_metadata))
    assert _lineage_ids(mysql_store, on_mysql.mlmd_ids) == _lineage_ids(
        sqlite_store, on_sqlite.mlmd_ids
    )
    volatile = ("version", "path", "pushed_at", "mlmd_ids")
    view_mysql, view_sqlite = asdict(on_mysql), asdict(on_sqlite)
    # Each run's Examples artifact lives under its own pipeline root.
    for view in (view_mysql, view_sqlite):
        for source in view["training_sources"]:
            assert "/ExampleGen/examples/" in source.pop("examples_uri")
    assert {k: v for k, v in view_mysql.items() if k not in volatile} == {
        k: v for k, v in view_sqlite.items() if k not in volatile
    }
    assert _lineage_ids(mysql_store, on_mysql.mlmd_ids) == {
        "pushed_model_artifact": "PushedModel",
        "pusher_execution": "Pusher",
        "evaluator_execution": "Evaluator",
        "model_artifact": "Model",
        "trainer_execution": "Trainer",
        "examples_artifact": "Examples",
        "examplegen_execution": "ExampleGen",
    }
    sums = (FIXTURES / DATASET / "SHA256SUMS").read_text().split()
    assert on_mysql.source_sha256 == dict(zip(sums[1::2], sums[0::2], strict=True))
    assert (on_mysql.dataset, on_mysql.model, on_mysql.blessed) == (DATASET, "cnn_model_fn", True)
    # The lineage and the summary read the same MySQL store the same way.
    summary, _ = both_summaries
    assert str(on_mysql.version) == summary.pushed_version
    assert on_mysql.accuracy == summary.accuracy
    pusher = next(c for c in summary.components if c.name == "Pusher")
    assert on_mysql.mlmd_ids["pusher_execution"] == pusher.execution_id


@pytest.mark.e2e
@pytest.mark.slow
def test_a_second_run_on_the_same_mysql_store_is_refused(twin_runs):
    described = describe_metadata(twin_runs.config)
    assert described == f"mysql://mlmd@127.0.0.1:{twin_runs.server.port}/mnist_tfx_run"
    for message in (twin_runs.busy_error, twin_runs.second_run.stderr):
        assert f"{described}: another pipeline run (MySQL connection " in message
        assert "wait for it to finish or pass another --metadata" in message
        assert twin_runs.server.password not in message
    assert twin_runs.second_run.returncode == EXIT_BUSY, twin_runs.second_run.stderr
    # Refused before anything was written; the store holds the first run only.
    assert sorted(p.name for p in (twin_runs.mysql_root.parent / "second").iterdir()) == []
    assert twin_runs.lock_free_after


# ------------------------------------------------- the lock and the login
# Quick, but slow-marked: the MariaDB fixture installs the server on first use.


HOLD_LOCK = """
import sys, time
from pipeline.metadata_config import exclusive_mysql_lock, metadata_connection_config
with exclusive_mysql_lock(metadata_connection_config(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_lock_of_a_killed_holder_is_free_again(mariadb_server):  # noqa: F811
    url = mariadb_server.url(mariadb_server.create_database("killed_holder"))
    config = metadata_connection_config(url)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, url], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(MetadataBusyError), exclusive_mysql_lock(config):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 5
        while True:
            try:
                with exclusive_mysql_lock(config):
                    break
            except MetadataBusyError:
                assert time.monotonic() < deadline, "lock still held after its holder died"
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_locks_of_two_databases_are_independent(mariadb_server):  # noqa: F811
    first = metadata_connection_config(mariadb_server.url(mariadb_server.create_database("one")))
    second = metadata_connection_config(mariadb_server.url(mariadb_server.create_database("two")))
    with exclusive_store(first), exclusive_store(second):
        pass


@pytest.mark.slow
def test_a_wrong_password_is_explained_without_showing_it(mariadb_server):  # noqa: F811
    url = mariadb_server.url("mnist_tfx_run", with_password=False)
    config = metadata_connection_config(url, environ={PASSWORD_ENV: "Wrong-Pass"})
    with pytest.raises(MetadataConnectionError) as error, exclusive_mysql_lock(config):
        pass
    assert str(error.value).startswith(f"{describe_metadata(config)}: cannot connect to MySQL:")
    assert "Access denied for user 'mlmd'" in str(error.value)
    assert "Wrong-Pass" not in str(error.value)
    with pytest.raises(MetadataConnectionError) as error:
        open_metadata_store(config)
    assert "Access denied for user 'mlmd'" in str(error.value)


@pytest.mark.slow
def test_reading_a_missing_database_does_not_create_it(mariadb_server):  # noqa: F811
    config = metadata_connection_config(mariadb_server.url("never_made"))
    with pytest.raises(MetadataConnectionError) as error:
        open_metadata_store(config)
    assert "ML Metadata cannot open the database" in str(error.value)
    with mariadb_server.root_connection() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW DATABASES LIKE 'never_made'")
        assert cursor.fetchall() == ()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
