"""Publishing to an object store (``s3://``) against a real local S3 endpoint
(``moto_server``, tests/s3_fixture.py): push, list, prune and roll back; a push killed
(SIGKILL) after each step of the protocol never leaves an integer version that is
listed or loaded, and the next push cleans up; ``mnist-tfx serve`` loads a version
from S3 and answers; bad input (unreachable endpoint, missing bucket, no or refused
credentials, a read-only prefix) fails in one line naming the URL.

Everything that touches ``s3://`` from TensorFlow runs in a subprocess (the plugin
stays out of the test process); a subprocess prints one JSON line of results, and its
exit status must be the one it chose (serving/object_store.py's exit guard).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.s3_fixture import S3Server, run_python
from tests.serving_fixture import (
    MODEL_NAME,
    ServerProcess,
    exported_versions,
    free_port,
    mnist_images,
    serialized_example,
)

REPO = Path(__file__).resolve().parents[2]

# Run in every subprocess: the two exported models, a short lease (a killed push's
# lease must expire within the test), results printed as one JSON line.
PRELUDE = """
import json, os, signal, sys, time
from serving import object_store, publish
from serving.publish import list_versions, publish_saved_model, prune_versions, rollback
from serving.verify import verify_saved_model
from serving.versions import BasePathScanner
publish.LEASE_S = 3.0
MODELS = {models!r}
def out(**results):
    print("RESULT " + json.dumps(results), flush=True)
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def models() -> list[str]:
    return [str(path) for path in exported_versions()]


def _run(code: str, env: dict[str, str], models: list[str], expect_rc: int = 0) -> dict:
    proc = run_python(PRELUDE.format(models=models) + code, env)
    assert proc.returncode == expect_rc, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "pure virtual method called" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_publish_list_prune_and_rollback_on_s3(s3, models, tmp_path):
    base = s3.url("roundtrip", MODEL_NAME)
    local = tmp_path / "local" / MODEL_NAME
    result = _run(
        f"""
base = {base!r}
v1, p1 = publish_saved_model(MODELS[0], base, now=1000, verify=verify_saved_model)
v2, p2 = publish_saved_model(MODELS[1], base, now=1000, verify=verify_saved_model)
same = publish.current_version_if_same(MODELS[1], base)
listed = list_versions(base)
new, restored = rollback(base, verify=verify_saved_model, now=1000)
after_rollback = list_versions(base)
sources = publish.rollback_sources(base)
deleted = prune_versions(base, keep=2)
# A model on the store (a cluster's pipeline root) pushed to a local base path.
local_version, _ = publish_saved_model(f"{{base}}/1001", {str(local)!r}, now=7)
out(local_version=local_version, v1=v1, p1=p1, v2=v2, same=same, listed=listed, new=new,
    restored=restored, after_rollback=after_rollback, sources=sources, deleted=deleted,
    final=list_versions(base), scanned=sorted(BasePathScanner(base).scan().versions))
""",
        s3.env(),
        models,
    )
    assert (result["v1"], result["v2"]) == (1000, 1001)
    assert result["p1"] == f"{base}/1000"
    assert result["same"] == [1001, f"{base}/1001"]
    assert result["listed"] == [1000, 1001]
    assert (result["new"], result["restored"]) == (1002, 1000)
    assert result["after_rollback"] == [1000, 1001, 1002]
    assert result["sources"] == {"1002": 1000}
    assert result["deleted"] == [1000]
    assert result["final"] == result["scanned"] == [1001, 1002]
    assert result["local_version"] == 7
    assert sorted(p.name for p in local.iterdir()) == ["7"]
    assert (local / "7" / "saved_model.pb").read_bytes() == (
        Path(models[1]) / "saved_model.pb"
    ).read_bytes()
    keys = s3.objects(f"roundtrip/{MODEL_NAME}/")
    prefix = f"roundtrip/{MODEL_NAME}/"
    top = {key[len(prefix) :].split("/")[0] for key in keys}
    # No staging copy, no lease, no trace of the pruned version: only the two versions
    # and the rollback log.
    assert top == {"1001", "1002", ".rollbacks.jsonl"}
    # The restored copy holds exactly the first model's files, saved_model.pb included.
    source_files = sorted(
        str(p.relative_to(models[0])) for p in Path(models[0]).rglob("*") if p.is_file()
    )
    assert sorted(k[len(prefix) + 5 :] for k in keys if k.startswith(prefix + "1002/")) == (
        source_files
    )


# Each step of the protocol, and where the push is killed (SIGKILL, no clean-up):
#   staged     every file written under .incoming-<v>-*, before it is read back
#   verified   read back and verified, before the first file is copied into <v>/
#   mid-copy   every file of <v>/ but saved_model.pb written
#   last-file  saved_model.pb written into <v>/, the staged copy not yet deleted
KILL_HOOK = """
step = {step!r}
real_copy, real_digest = object_store.copy, object_store.digest
def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
def copy(src, dst):
    into_version = "/2000/" in dst  # only the second push, version 2000, is killed
    last = dst.endswith("/saved_model.pb")
    if into_version and (step == "verified" or (step == "mid-copy" and last)):
        die()
    real_copy(src, dst)
    if into_version and step == "last-file" and last:
        die()
def digest(url):
    if step == "staged" and "/.incoming-2000-" in str(url):
        die()
    return real_digest(url)
object_store.copy, object_store.digest = copy, digest
base = {base!r}
publish_saved_model(MODELS[0], base, now=1000)
print("RESULT " + json.dumps(dict(first=list_versions(base))), flush=True)
publish_saved_model(MODELS[1], base, now=2000, verify=verify_saved_model)
print("RESULT " + json.dumps(dict(survived=True)), flush=True)
"""


@pytest.mark.parametrize("step", ["staged", "verified", "mid-copy", "last-file"])
def test_push_killed_at_each_step_never_shows_an_incomplete_version(s3, models, step):
    base = s3.url("killed", step, MODEL_NAME)
    prefix = f"killed/{step}/{MODEL_NAME}/"
    proc = run_python(
        PRELUDE.format(models=models) + KILL_HOOK.format(step=step, base=base), s3.env()
    )
    assert proc.returncode == -9, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert 'RESULT {"first": [1000]}' in proc.stdout
    assert "survived" not in proc.stdout
    left = s3.objects(prefix)
    staged = [k for k in left if k.startswith(prefix + ".incoming-2000-")]
    in_version = [k[len(prefix + "2000/") :] for k in left if k.startswith(prefix + "2000/")]
    # What the dead push left, step by step: a staged copy (and its lease) every time...
    assert staged and prefix + ".publish.lock" in left
    assert any(k.endswith("/saved_model.pb") for k in staged)
    # ... and in 2000/ nothing, some files without saved_model.pb, or all of them.
    if step in ("staged", "verified"):
        assert in_version == []
    elif step == "mid-copy":
        assert in_version and "saved_model.pb" not in in_version
        assert "variables/variables.index" in in_version
    else:
        assert "saved_model.pb" in in_version
    complete = step == "last-file"

    # Readers (list_versions, the server's scan) see 2000 only once it is complete;
    # the next push (after the dead push's 3 s lease expires) cleans up.
    result = _run(
        f"""
base = {base!r}
before = list_versions(base)
scanned = sorted(BasePathScanner(base).scan().versions)
start = time.monotonic()
version, _ = publish_saved_model(MODELS[1], base, now=3000)
out(before=before, scanned=scanned, version=version, after=list_versions(base),
    waited=time.monotonic() - start)
""",
        s3.env(),
        models,
    )
    expected = [1000, 2000] if complete else [1000]
    assert result["before"] == result["scanned"] == expected
    assert result["version"] == 3000
    assert result["after"] == [*expected, 3000]
    left = s3.objects(prefix)
    assert not [k for k in left if ".incoming-" in k or k.endswith(".publish.lock")], left
    assert any(k == prefix + "2000/saved_model.pb" for k in left) == complete
    if not complete:
        assert not [k for k in left if k.startswith(prefix + "2000/")], left


def test_serve_loads_from_s3_only_complete_versions_and_answers(s3, models, tmp_path, monkeypatch):
    """``mnist-tfx serve --model-base-path s3://...``: version 1000 serves; 2000, killed
    mid-copy (no saved_model.pb), is never loaded; the next push's 3000 replaces 1000."""
    base = s3.url("served", MODEL_NAME)
    proc = run_python(
        PRELUDE.format(models=models) + KILL_HOOK.format(step="mid-copy", base=base), s3.env()
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    server = ServerProcess(
        tmp_path, "--model-name", MODEL_NAME, "--model-base-path", base, "--poll-seconds", "0.5"
    )
    try:
        server.wait_serving([1000])
        images, labels = mnist_images("t10k")
        examples = [serialized_example(image) for image in images[:8]]
        instances = [{"b64": base64.b64encode(e).decode()} for e in examples]
        response = requests.post(
            f"{server.url}/v1/models/{MODEL_NAME}:predict",
            json={"instances": instances},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        probabilities = np.array([p["probabilities"] for p in predictions])
        assert probabilities.shape == (8, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
        assert [p["classes"] for p in predictions] == list(probabilities.argmax(axis=1))
        status = requests.get(f"{server.url}/v1/models/{MODEL_NAME}", timeout=10).json()
        assert [s["version"] for s in status["model_version_status"]] == ["1000"]
        log = server.log()
        assert f"not loading {base}/2000 until its saved_model.pb exists" in log
        assert "mnist version 2000" not in log  # never even attempted
        _run(
            f"publish_saved_model(MODELS[1], {base!r}, now=3000); out(ok=True)",
            s3.env(),
            models,
        )
        server.wait_serving([3000])
        assert "mnist version 2000" not in server.log()
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log()
    assert "pure virtual method called" not in server.log()


def test_cli_rollback_and_versions_on_s3(s3, models, tmp_path):
    """``mnist-tfx rollback`` and ``versions`` with ``--serving-root s3://...``."""
    root = s3.url("cli")
    base = f"{root}/{MODEL_NAME}"
    _run(
        f"""
publish_saved_model(MODELS[0], {base!r}, now=1000)
publish_saved_model(MODELS[1], {base!r}, now=1000)
out(ok=True)
""",
        s3.env(),
        models,
    )
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = tmp_path / "metadata.sqlite"
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(store)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    metadata_store.MetadataStore(config)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            cwd=tmp_path,
            env={**s3.env(), "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    rolled = cli("rollback", "--dataset", "mnist", "--serving-root", root, "--keep-versions", "2")
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    match = re.fullmatch(
        rf"version (\d+) now serves the model of version 1000 \({re.escape(base)}/\1\)\n"
        r"deleted old versions 1000\n",
        rolled.stdout,
    )
    assert match, rolled.stdout
    new = int(match[1])
    assert new > 1001
    listed = cli(
        "versions", "--dataset", "mnist", "--serving-root", root, "--metadata", str(store),
        "--json",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = json.loads(listed.stdout)
    assert [row["version"] for row in rows] == [new, 1001]
    assert rows[0]["rollback_of"] == 1000
    assert rows[0]["path"] == f"{base}/{new}"
    # An error after S3 was used keeps its exit status (2: bad input), despite the
    # exit guard that ends every process that used tensorflow-io's S3 filesystem.
    empty = cli("rollback", "--dataset", "mnist", "--serving-root", s3.url("nothing"))
    assert empty.returncode == 2, empty.stderr[-3000:]
    assert empty.stderr.strip().splitlines()[-1] == (
        f"error: {s3.url('nothing', MODEL_NAME)}: no versions to roll back"
    )
    assert "pure virtual method called" not in rolled.stderr + listed.stderr + empty.stderr


def test_a_versions_card_and_its_linked_report_on_s3(s3, models, tmp_path):
    """The model card written into a version on S3, the evaluation report copied beside
    it and linked (components/pusher/model_card.py), and ``versions --card`` reading
    the linked card back from S3."""
    root = s3.url("card")
    base = f"{root}/{MODEL_NAME}"
    report = tmp_path / "report"
    (report / "img").mkdir(parents=True)
    (report / "index.html").write_text("<h1>report</h1>")
    (report / "img" / "a.png").write_bytes(b"\x89PNG\x00")
    result = _run(
        f"""
from components.pusher import model_card
version, path = publish_saved_model(MODELS[0], {base!r}, now=1000)
facts = model_card.gather_facts(model_dir=MODELS[0], model_name="mnist", version=version,
                                blessing=None, run_id="run-s3")
model_card.write_card(path, facts)
digest = model_card.model_digest(path)
written = model_card.link_report(path, {str(report)!r}, "s3://elsewhere/index.html", "run-s3")
out(path=path, written=written, same=model_card.model_digest(path) == digest,
    png=object_store.read_bytes(path + "/assets.extra/evaluation_report/img/a.png").hex(),
    files=sorted(object_store.files_under(path + "/assets.extra/evaluation_report")))
""",
        s3.env(),
        models,
    )
    path = result["path"]
    assert result["files"] == ["img/a.png", "index.html"]
    assert result["png"] == b"\x89PNG\x00".hex()
    assert result["same"] is True
    assert f"{path}/assets.extra/model_card.md" in result["written"]
    card = subprocess.run(
        [sys.executable, "-m", "cli", "versions", "--dataset", "mnist", "--serving-root", root,
         "--card", path.rsplit("/", 1)[1]],
        cwd=tmp_path, env={**s3.env(), "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert card.returncode == 0, card.stderr[-3000:]
    assert card.stdout.startswith(f"# Model card: mnist version {path.rsplit('/', 1)[1]}\n")
    assert (
        "[The evaluation report of run run-s3](evaluation_report/index.html): a copy beside this "
        "card (`assets.extra/evaluation_report/`); the run wrote it to s3://elsewhere/index.html."
        in card.stdout.splitlines()
    )
    assert "Not linked yet" not in card.stdout


# --- Bad input: one line naming the URL, and nothing visible as a version. ---


def _publish_error(env: dict[str, str], base: str, models: list[str]) -> dict:
    return _run(
        f"""
start = time.monotonic()
try:
    publish_saved_model(MODELS[0], {base!r}, now=1000)
    out(error=None)
except Exception as error:
    out(error=str(error), kind=type(error).__name__, seconds=time.monotonic() - start)
""",
        env,
        models,
    )


def test_unreachable_endpoint_fails_fast(s3, models):
    env = {**s3.env(), "S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    base = s3.url("unreachable", MODEL_NAME)
    result = _publish_error(env, base, models)
    assert result["kind"] == "ObjectStoreError"
    assert result["error"].startswith(f"{base}: the S3 endpoint http://127.0.0.1:")
    assert "(S3_ENDPOINT) is unreachable: Connection refused" in result["error"]
    assert "\n" not in result["error"]
    assert result["seconds"] < 10


def test_missing_bucket(s3, models):
    base = f"s3://no-such-bucket/{MODEL_NAME}"
    result = _publish_error(s3.env(), base, models)
    assert result["kind"] == "ObjectStoreError"
    assert result["error"].startswith(
        f"{base}/.publish.lock: bucket no-such-bucket does not exist (NoSuchBucket"
    )


@pytest.fixture(scope="module")
def s3_auth(tmp_path_factory):
    """A second moto_server that checks IAM: a user who may read everything and write
    only the hidden staging and lease objects under ro/mnist/."""
    with S3Server(tmp_path_factory.mktemp("moto-auth"), auth=True) as server:
        hidden_only = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:DeleteObject"],
                    "Resource": [
                        f"arn:aws:s3:::{server.bucket}/ro/{MODEL_NAME}/.incoming-*",
                        f"arn:aws:s3:::{server.bucket}/ro/{MODEL_NAME}/.publish.lock",
                    ],
                },
            ],
        }
        server.add_user("hidden-only", hidden_only)
        server.enforce()
        yield server


def test_read_only_prefix_leaves_no_version(s3_auth, models):
    """The push stages and verifies (allowed), then may not write ``<v>/``: one line
    naming the object, and neither a version nor its staged copy stays behind."""
    base = s3_auth.url("ro", MODEL_NAME)
    result = _publish_error(s3_auth.env(s3_auth.keys["hidden-only"]), base, models)
    assert result["kind"] == "ObjectStoreError"
    assert result["error"].startswith(f"{base}/1000/")
    assert (
        ": access denied: the credentials may not read or write here (AccessDenied"
        in (result["error"])
    )
    assert s3_auth.objects(f"ro/{MODEL_NAME}/") == []


def test_refused_and_missing_credentials(s3_auth, models):
    base = s3_auth.url("creds", MODEL_NAME)
    refused = _publish_error(s3_auth.env(("AKIAWRONG", "wrong")), base, models)
    assert refused["error"].startswith(
        f"{base}/.publish.lock: the store refused the credentials: set AWS_ACCESS_KEY_ID"
    )
    assert "InvalidAccessKeyId" in refused["error"]
    env = s3_auth.env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name)
    missing = _publish_error({**env, "HOME": "/nonexistent"}, base, models)
    assert missing["kind"] == "ObjectStoreError", missing
    assert missing["error"].startswith(f"{base}: no AWS credentials: AWS_ACCESS_KEY_ID is unset")
    assert missing["seconds"] < 10
    assert s3_auth.objects("creds/") == []
    print(f"refused in {refused['seconds']:.1f} s, missing in {missing['seconds']:.1f} s")
