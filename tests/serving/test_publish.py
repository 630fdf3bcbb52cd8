"""Tests of serving/publish.py: atomic, ever-growing SavedModel versions, published
under one lock per base path (real processes racing on real files)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.object_store import ObjectStoreError
from serving.publish import (
    LOCK_NAME,
    ROLLBACK_LOG,
    TEMP_PREFIX,
    PublishLockTimeoutError,
    current_version_if_same,
    labelled_versions,
    list_versions,
    next_version,
    prune_versions,
    publish_lock,
    publish_saved_model,
    remove_stale_temporaries,
    rollback,
    tree_digest,
)

NOW = 1_700_000_000.7


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> file bytes (None for directories) of everything below root."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    """A small directory laid out like a SavedModel."""
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "assets").mkdir()
    (model / "saved_model.pb").write_bytes(b"\x08\x01graph-def" * 10)
    (model / "fingerprint.pb").write_bytes(b"fp")
    (model / "variables" / "variables.index").write_bytes(b"index")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(range(256)) * 4)
    return model


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "serving" / "mnist"


def test_publish_creates_integer_version_with_identical_content(saved_model, base):
    """The version is int(now), its directory is base/<version> and holds an exact copy."""
    version, path = publish_saved_model(saved_model, base, now=NOW)
    assert version == 1_700_000_000
    assert path == str(base / "1700000000")
    assert sorted(p.name for p in base.iterdir()) == ["1700000000"]
    assert tree(Path(path)) == tree(saved_model)
    assert len(tree(saved_model)) == 6  # 2 directories + 4 files, empty assets/ included
    assert list_versions(base) == [1_700_000_000]


def test_publish_accepts_str_paths_and_leaves_source_untouched(saved_model, base):
    """Paths may be strings; the source directory is copied, not moved."""
    before = tree(saved_model)
    version, path = publish_saved_model(str(saved_model), str(base), now=NOW)
    assert tree(saved_model) == before
    assert tree(Path(path)) == before
    assert version == 1_700_000_000


def test_versions_grow_even_when_clock_goes_back(saved_model, base):
    """A later push with an earlier (or the same) clock still gets a larger version."""
    v1, _ = publish_saved_model(saved_model, base, now=NOW)
    v2, _ = publish_saved_model(saved_model, base, now=NOW - 3600)
    v3, _ = publish_saved_model(saved_model, base, now=NOW - 3600)
    v4, _ = publish_saved_model(saved_model, base, now=NOW + 100)
    assert [v1, v2, v3, v4] == [1_700_000_000, 1_700_000_001, 1_700_000_002, 1_700_000_100]
    assert list_versions(base) == [v1, v2, v3, v4]
    for version in (v1, v2, v3, v4):
        assert tree(base / str(version)) == tree(saved_model)


def test_next_version(tmp_path):
    """next_version is the clock on an empty or missing base, else max(clock, last + 1)."""
    assert next_version(tmp_path / "missing", now=12.9) == 12
    assert next_version(tmp_path, now=500.0) == 500
    (tmp_path / "700").mkdir()
    (tmp_path / "90").mkdir()
    assert next_version(tmp_path, now=500.0) == 701
    assert next_version(tmp_path, now=701.0) == 701
    assert next_version(tmp_path, now=1000.0) == 1000


def test_list_versions_ignores_non_numeric_names_and_files(tmp_path):
    """Only integer-named directories are versions, sorted numerically."""
    # "²" and "٣" are str.isdigit() but not versions (int("²") raises).
    for name in ["10", "9", "100", "v3", "12a", ".incoming-5-1", "-4", "1.5", "tmp", "²", "٣"]:
        (tmp_path / name).mkdir()
    (tmp_path / "77").write_text("a file, not a version")
    assert list_versions(tmp_path) == [9, 10, 100]
    assert list_versions(tmp_path / "missing") == []


def test_next_version_ignores_non_numeric_names(tmp_path):
    """Non-version entries do not influence the next version."""
    (tmp_path / "9999999999x").mkdir()
    (tmp_path / f"{TEMP_PREFIX}9999999999-1").mkdir()
    (tmp_path / "9999999999").write_text("file")
    assert next_version(tmp_path, now=42.0) == 42


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_child():
    """A child process that sleeps until the test ends."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait()


def test_stale_temporaries_of_dead_owners_removed_on_next_publish(saved_model, base, live_child):
    """Only .incoming-* entries whose owner pid on this host is gone are deleted; a live
    owner's, another host's and an owner-less entry stay, and so do versions."""
    old_version, _ = publish_saved_model(saved_model, base, now=NOW)
    host = socket.gethostname()
    dead = base / f"{TEMP_PREFIX}1700000001-{_dead_pid()}@{host}"
    (dead / "variables").mkdir(parents=True)
    (dead / "variables" / "variables.index").write_bytes(b"partial")
    half_deleted = base / f"{TEMP_PREFIX}deleting-12-{_dead_pid()}@{host}"
    half_deleted.mkdir()
    live = base / f"{TEMP_PREFIX}1700000001-{live_child.pid}@{host}"
    live.mkdir()
    elsewhere = base / f"{TEMP_PREFIX}1700000001-{_dead_pid()}@not-{host}"
    elsewhere.mkdir()
    no_owner = base / f"{TEMP_PREFIX}1700000001-4242"
    no_owner.mkdir()
    unrelated = base / "notes"
    unrelated.mkdir()

    version, _ = publish_saved_model(saved_model, base, now=NOW)

    assert version == old_version + 1
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [str(old_version), str(version), "notes", live.name, elsewhere.name, no_owner.name]
    )
    assert tree(base / str(old_version)) == tree(saved_model)
    # Once its owner is gone, the live child's entry goes too.
    live_child.kill()
    live_child.wait()
    publish_saved_model(saved_model, base, now=NOW)
    assert not live.exists() and elsewhere.exists() and no_owner.exists()


def test_remove_stale_temporaries_returns_removed_names(tmp_path, live_child):
    """remove_stale_temporaries deletes only .incoming-* entries of dead owners and
    names them."""
    host = socket.gethostname()
    pid = _dead_pid()
    (tmp_path / f"{TEMP_PREFIX}1-{pid}@{host}" / "sub").mkdir(parents=True)
    (tmp_path / f"{TEMP_PREFIX}deleting-3-{pid}@{host}").mkdir()
    (tmp_path / f"{TEMP_PREFIX}4-{live_child.pid}@{host}").mkdir()
    (tmp_path / f"{TEMP_PREFIX}6-{os.getpid()}@{host}").write_text("own process: alive")
    (tmp_path / "5").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == [
        f"{TEMP_PREFIX}1-{pid}@{host}",
        f"{TEMP_PREFIX}deleting-3-{pid}@{host}",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{TEMP_PREFIX}4-{live_child.pid}@{host}",
        f"{TEMP_PREFIX}6-{os.getpid()}@{host}",
        "5",
    ]
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_source_without_saved_model_pb_raises_and_writes_nothing(tmp_path, base):
    """A directory that is not a SavedModel is refused before anything is created."""
    not_a_model = tmp_path / "empty_export"
    (not_a_model / "variables").mkdir(parents=True)
    (not_a_model / "saved_model.pbtxt").write_text("text format is not what is checked")
    with pytest.raises(
        FileNotFoundError, match=r"empty_export: no saved_model\.pb, not a SavedModel"
    ):
        publish_saved_model(not_a_model, base, now=NOW)
    assert not base.exists()


def test_missing_source_raises_and_writes_nothing(tmp_path, base):
    """A source directory that does not exist is refused."""
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        publish_saved_model(tmp_path / "nope", base, now=NOW)
    assert not base.exists()


def test_failed_publish_keeps_existing_versions_and_temporaries(saved_model, base, tmp_path):
    """A refused push leaves the base directory exactly as it was."""
    publish_saved_model(saved_model, base, now=NOW)
    (base / f"{TEMP_PREFIX}1-1").mkdir()
    before = tree(base)
    with pytest.raises(FileNotFoundError):
        publish_saved_model(tmp_path / "nope", base, now=NOW)
    assert tree(base) == before


@pytest.mark.parametrize("uri", ["hdfs://nn/m", "file://x/m", "az://c/m"])
def test_unsupported_url_scheme_is_one_clear_line(saved_model, uri):
    """s3:// and gs:// are object stores (tests/serving/test_publish_object_store.py);
    any other scheme is refused in one line naming the URL, before anything is written."""
    scheme = uri.split(":")[0]
    with pytest.raises(ObjectStoreError) as caught:
        publish_saved_model(saved_model, uri, now=NOW)
    assert str(caught.value) == (
        f"{uri}: unsupported URL scheme {scheme}://; expected a local path, s3:// or gs://"
    )


def test_same_model_as_newest_version_is_recognised(saved_model, base):
    """Re-blessing the model being served finds its version instead of copying it again."""
    assert current_version_if_same(saved_model, base) is None
    version, path = publish_saved_model(saved_model, base, now=1000)
    assert current_version_if_same(saved_model, base) == (version, path)
    (saved_model / "variables" / "variables.index").write_bytes(b"retrained")
    assert current_version_if_same(saved_model, base) is None


def test_tree_digest_covers_names_and_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "f").write_bytes(b"x")
    assert tree_digest(a) == tree_digest(b)
    (b / "sub" / "f").rename(b / "sub" / "g")
    assert tree_digest(a) != tree_digest(b)


def test_prune_keeps_the_newest_versions(saved_model, base):
    for now in (1000, 2000, 3000, 4000):
        publish_saved_model(saved_model, base, now=now)
    assert prune_versions(base, keep=2) == [1000, 2000]
    assert list_versions(base) == [3000, 4000]
    assert sorted(p.name for p in base.iterdir()) == ["3000", "4000"]
    assert prune_versions(base, keep=5) == []


def test_prune_rejects_keeping_nothing(base):
    with pytest.raises(ValueError, match="keep_versions: expected >= 1, got 0"):
        prune_versions(base, keep=0)


# --- One lock per base path: real processes racing on real files. ---

REPO = Path(__file__).resolve().parents[2]
# One publishing process: announces itself, waits for the shared start signal, then
# publishes (or rolls back, or just holds the lock) with a verify hook that sleeps,
# so the race window is wide, and logs when its verification ran.
WORKER = r"""
import json, sys, time
from pathlib import Path
from serving import publish

args = json.loads(sys.argv[1])
work = Path(args["work"])
(work / ("ready-" + args["who"])).touch()
while not (work / "go").exists():
    time.sleep(0.002)

def verify(path):
    start = time.time()
    time.sleep(args["sleep"])
    line = {"who": args["who"], "start": start, "end": time.time(), "staged": Path(path).name}
    with open(work / "verify.jsonl", "a") as log:
        log.write(json.dumps(line) + "\n")

if args["op"] == "publish":
    version, _ = publish.publish_saved_model(
        args["model"], args["base"], now=args["now"], verify=verify
    )
    print(json.dumps({"version": version}))
elif args["op"] == "rollback":
    version, restored = publish.rollback(args["base"], verify=verify, now=args["now"])
    print(json.dumps({"version": version, "restores": restored}))
else:
    with publish.publish_lock(args["base"]):
        (work / "held").touch()
        time.sleep(args["sleep"])
"""


def _start(work: Path, who: str, **args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    payload = json.dumps({"work": str(work), "who": who, **args}, default=str)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, payload],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _race(work: Path, workers: dict[str, dict]) -> dict[str, dict]:
    """Start every worker, release them at once, and return each one's JSON answer."""
    work.mkdir(parents=True, exist_ok=True)
    procs = {who: _start(work, who, **args) for who, args in workers.items()}
    deadline = time.monotonic() + 60
    while not all((work / f"ready-{who}").exists() for who in procs):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.01)
    (work / "go").touch()
    answers = {}
    for who, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{who} failed: {err}"
        answers[who] = json.loads(out.strip().splitlines()[-1])
    return answers


def _verify_log(work: Path) -> list[dict]:
    lines = (work / "verify.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["start"])


def _model_like(saved_model: Path, where: Path, payload: bytes) -> Path:
    shutil.copytree(saved_model, where)
    (where / "variables" / "variables.index").write_bytes(payload)
    return where


def test_two_pushes_at_once_get_two_complete_distinct_versions(saved_model, base, tmp_path):
    """Two processes publishing at the same clock second both succeed, one after the
    other: distinct versions with their own bytes, no staging left behind."""
    models = {who: _model_like(saved_model, tmp_path / who, who.encode()) for who in ("a", "b")}
    work = tmp_path / "work"
    answers = _race(
        work,
        {who: {"op": "publish", "model": models[who], "base": base, "now": NOW, "sleep": 0.5}
         for who in models},
    )  # fmt: skip
    versions = {who: answer["version"] for who, answer in answers.items()}
    assert sorted(versions.values()) == [1_700_000_000, 1_700_000_001]
    assert sorted(p.name for p in base.iterdir()) == ["1700000000", "1700000001"]
    for who, version in versions.items():
        assert tree(base / str(version)) == tree(models[who])
    first, second = _verify_log(work)
    # The lock serialised them: the second verified only after the first had finished.
    assert second["start"] >= first["end"]
    assert versions[first["who"]] < versions[second["who"]]
    # Staged under .incoming-<version>-<pid>@<host>.
    assert first["staged"].startswith(f"{TEMP_PREFIX}{versions[first['who']]}-")
    assert first["staged"].endswith(f"@{socket.gethostname()}")


def test_push_and_rollback_at_once_both_succeed_in_order(saved_model, base, tmp_path):
    """A push racing a rollback: both succeed, versions grow, and the rollback log names
    the version that was current when the rollback ran and the one before it."""
    publish_saved_model(_model_like(saved_model, tmp_path / "m1", b"one"), base, now=1000)
    publish_saved_model(_model_like(saved_model, tmp_path / "m2", b"two"), base, now=2000)
    pushed = _model_like(saved_model, tmp_path / "m3", b"three")
    work = tmp_path / "work"
    answers = _race(
        work,
        {
            "push": {"op": "publish", "model": pushed, "base": base, "now": 3000, "sleep": 0.5},
            "rollback": {"op": "rollback", "base": base, "now": 3000, "sleep": 0.5},
        },
    )
    versions = list_versions(base)
    assert versions == [1000, 2000, 3000, 3001]
    assert {answers["push"]["version"], answers["rollback"]["version"]} == {3000, 3001}
    (record,) = [json.loads(line) for line in (base / ROLLBACK_LOG).read_text().splitlines()]
    new = answers["rollback"]["version"]
    before = versions[: versions.index(new)]
    assert record["version"] == new
    assert record["replaced"] == before[-1] and record["restores"] == before[-2]
    assert answers["rollback"]["restores"] == record["restores"]
    assert tree(base / str(new)) == tree(base / str(record["restores"]))
    assert tree(base / str(answers["push"]["version"])) == tree(pushed)
    first, second = _verify_log(work)
    assert second["start"] >= first["end"]
    assert [r["who"] for r in (first, second)] == [
        "push" if answers["push"]["version"] == 3000 else "rollback",
        "rollback" if answers["push"]["version"] == 3000 else "push",
    ]
    assert sorted(p.name for p in base.iterdir()) == [ROLLBACK_LOG, "1000", "2000", "3000", "3001"]


def test_lock_timeout_names_the_base_path_and_the_holder(saved_model, base, tmp_path):
    """While another process holds the lock, a push waits, then fails with the base
    path and the holder's pid; nothing is written. Once the holder dies (SIGKILL,
    lock file left behind), the next push takes the lock."""
    publish_saved_model(saved_model, base, now=NOW)
    work = tmp_path / "work"
    work.mkdir()
    (work / "go").touch()
    holder = _start(work, "holder", op="hold", base=base, sleep=120)
    try:
        deadline = time.monotonic() + 60
        while not (work / "held").exists():
            assert time.monotonic() < deadline and holder.poll() is None, holder.stderr.read()
            time.sleep(0.01)
        before = tree(base)
        started = time.monotonic()
        with pytest.raises(PublishLockTimeoutError) as raised:
            publish_saved_model(saved_model, base, now=NOW, lock_timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert str(raised.value).startswith(
            f"{base}: another publish holds {base / LOCK_NAME} "
            f"(pid {holder.pid} on host {socket.gethostname()} since "
        )
        assert "waited 0.3 s" in str(raised.value)
        assert tree(base) == before
        with pytest.raises(PublishLockTimeoutError, match=f"pid {holder.pid} "):
            prune_versions(base, keep=1, lock_timeout=0.1)
        with pytest.raises(PublishLockTimeoutError, match=f"pid {holder.pid} "):
            rollback(base, to=1_700_000_000, lock_timeout=0.1)
    finally:
        holder.kill()
        holder.wait()
    assert (base / LOCK_NAME).exists()  # a killed holder cannot clean up
    version, _ = publish_saved_model(saved_model, base, now=NOW, lock_timeout=5)
    assert version == 1_700_000_001
    assert sorted(p.name for p in base.iterdir()) == ["1700000000", "1700000001"]


def test_lock_is_reentrant_in_a_thread_and_excludes_other_threads(saved_model, base):
    """rollback and prune inside a held lock do not wait for themselves; another thread
    of the same process waits like another process."""
    publish_saved_model(saved_model, base, now=1000)
    publish_saved_model(saved_model, base, now=2000)
    errors = []

    def other_thread():
        try:
            with publish_lock(base, timeout=0.2):
                pass
        except PublishLockTimeoutError as error:
            errors.append(str(error))

    with publish_lock(base, timeout=1):
        assert rollback(base, now=0, lock_timeout=1) == (2001, 1000)
        assert prune_versions(base, keep=2, lock_timeout=1) == [1000]
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert (base / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on host ")
    assert len(errors) == 1 and f"pid {os.getpid()} " in errors[0]
    assert not (base / LOCK_NAME).exists()  # an idle base path holds versions only
    with publish_lock(base, timeout=0.2):  # and the lock is free again
        pass


def _models_config(path: Path, *entries: str) -> Path:
    path.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return path


@pytest.mark.parametrize("by", ["base_path", "name"])
def test_prune_keeps_versions_named_by_labels(saved_model, base, tmp_path, by):
    """keep=1 with a models.config labelling an old version: the newest (served) and the
    labelled version survive, everything else goes. Another model's labels do not
    count; the entry matches by base_path, or else by model name."""
    for now in (1000, 2000, 3000, 4000):
        publish_saved_model(saved_model, base, now=now)
    base_path = base if by == "base_path" else "/models/mnist"
    config = _models_config(
        tmp_path / "models.config",
        f'config {{ name: "served" base_path: "{base_path}" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 2000 } }',
        'config { name: "other" base_path: "/models/other" '
        'version_labels { key: "stable" value: 3000 } }',
    ) if by == "base_path" else _models_config(
        tmp_path / "models.config",
        'config { name: "mnist" base_path: "/models/mnist" '
        'version_labels { key: "stable" value: 2000 } }',
        'config { name: "other" base_path: "/models/other" '
        'version_labels { key: "stable" value: 3000 } }',
    )  # fmt: skip
    assert prune_versions(base, keep=1, models_config=config) == [1000, 3000]
    assert list_versions(base) == [2000, 4000]
    # Rolling back to the labelled version is fine; the next prune keeps it still.
    assert rollback(base, to=2000, now=0) == (4001, 2000)
    assert prune_versions(base, keep=1, models_config=config) == [4000]
    assert list_versions(base) == [2000, 4001]


def test_labelled_versions_of_a_config_naming_nothing_here(base, tmp_path):
    config = _models_config(
        tmp_path / "models.config",
        'config { name: "other" base_path: "/models/other" '
        'version_labels { key: "stable" value: 3000 } }',
    )
    assert labelled_versions(config, base) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('model_config_list { config { name: "mnist" base_path: "/m"', 'Expected "}"'),
        ('model_config_list { config { name: "mnist" } }', "model mnist has no base_path"),
    ],
)
def test_bad_models_config_deletes_nothing(saved_model, base, tmp_path, text, expected):
    """A models.config that does not parse is one error naming the file; no version
    is deleted."""
    for now in (1000, 2000):
        publish_saved_model(saved_model, base, now=now)
    config = tmp_path / "models.config"
    config.write_text(text)
    with pytest.raises(ValueError, match=f"^--models-config {config}: .*{expected}"):
        prune_versions(base, keep=1, models_config=config)
    missing = tmp_path / "missing.config"
    with pytest.raises(ValueError, match=f"^--models-config {missing}: cannot read it"):
        prune_versions(base, keep=1, models_config=missing)
    assert list_versions(base) == [1000, 2000]


def test_rollback_command_prunes_but_keeps_labelled_versions(saved_model, tmp_path):
    """`mnist-tfx rollback --keep-versions 1 --models-config FILE`: the restored copy
    becomes the newest, the labelled version survives, the others go; a models.config
    that does not parse is exit 2 naming the flag, before anything changes."""
    from tests.pipeline_fixture import run_cli

    base = tmp_path / "serving" / "mnist"
    for now, payload in ((1000, b"one"), (2000, b"two"), (3000, b"three")):
        publish_saved_model(_model_like(saved_model, tmp_path / str(now), payload), base, now=now)
    config = _models_config(
        tmp_path / "models.config",
        'config { name: "mnist" base_path: "/models/mnist" '
        'version_labels { key: "stable" value: 1000 } }',
    )
    bad = tmp_path / "bad.config"
    bad.write_text('model_config_list { config { name: "mnist" }')
    args = ["rollback", "--dataset", "mnist", "--serving-root", str(tmp_path / "serving")]
    refused = run_cli(*args, "--keep-versions", "1", "--models-config", str(bad), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(f"error: --models-config {bad}: "), refused.stderr
    assert list_versions(base) == [1000, 2000, 3000]

    done = run_cli(*args, "--keep-versions", "1", "--models-config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    versions = list_versions(base)
    assert len(versions) == 2 and versions[0] == 1000 and versions[1] > 3000
    assert tree(base / str(versions[1])) == tree(tmp_path / "2000")
    assert done.stdout.splitlines() == [
        f"version {versions[1]} now serves the model of version 2000 ({base / str(versions[1])})",
        "deleted old versions 2000, 3000",
    ]
    assert sorted(p.name for p in base.iterdir()) == [ROLLBACK_LOG, "1000", str(versions[1])]
