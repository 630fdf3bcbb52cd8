"""serving/s3_startup.py: the image's interpreter-start hook that gives every process
importing TensorFlow an ``s3://`` filesystem, against a real local S3 endpoint
(``moto_server``). Each case is a fresh interpreter with the hook's line in a
``sitecustomize.py`` on ``PYTHONPATH`` (the image has it in a ``.pth`` file), doing
only what TFX's own steps do: import TensorFlow, then use ``tf.io.gfile``.
"""

from __future__ import annotations

import sys

import pytest

from serving import s3_startup
from tests.s3_fixture import REPO, S3Server, run_python

# What ExampleGen's driver or StatisticsGen does first with an s3:// root: nothing of
# ours is imported.
TFX_STEP_LIKE = """
import sys
import tensorflow as tf
url = sys.argv[1]
tf.io.gfile.makedirs(url)
with tf.io.gfile.GFile(url + "/part-0", "w") as f:
    f.write("span 0")
print("LISTED", tf.io.gfile.listdir(url))
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto"), bucket="startup") as server:
        yield server


@pytest.fixture()
def site(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(s3_startup.STARTUP_LINE + "\n")
    return tmp_path


def hooked_env(s3: S3Server, site, flag: str = "1") -> dict[str, str]:
    return {**s3.env(), "PYTHONPATH": f"{site}:{REPO}", s3_startup.ENV: flag}


def test_a_tfx_like_process_reads_and_writes_s3_and_keeps_its_exit_status(s3, site):
    url = s3.url("root", "ExampleGen_1", "examples")
    proc = run_python(TFX_STEP_LIKE, hooked_env(s3, site), args=(url, "0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LISTED ['part-0']" in proc.stdout
    assert "root/ExampleGen_1/examples/part-0" in s3.objects("root/")
    # tensorflow-io aborts at exit after S3 use ("pure virtual method called", 134)
    # unless the exit guard runs: a failing step must still report its own status.
    proc = run_python(TFX_STEP_LIKE, hooked_env(s3, site), args=(s3.url("root", "failing"), "3"))
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
    assert "pure virtual method called" not in proc.stderr


def test_without_the_hook_tensorflow_has_no_s3(s3, site):
    """What the hook is for: the same process with the hook off fails as a TFX step
    on an s3:// root fails in an image without it."""
    proc = run_python(
        TFX_STEP_LIKE, hooked_env(s3, site, flag="0"), args=(s3.url("root", "off"), "0")
    )
    assert proc.returncode != 0
    assert "File system scheme 's3' not implemented" in proc.stderr, proc.stderr[-3000:]


def test_a_process_that_never_imports_tensorflow_loads_nothing(s3, site):
    code = (
        "import sys; print(sorted(m for m in ('tensorflow', 'tensorflow_io') if m in sys.modules))"
    )
    proc = run_python(code, hooked_env(s3, site))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_hook_arms_only_when_asked():
    finders = list(sys.meta_path)
    assert s3_startup.install({}) is False
    assert s3_startup.install({s3_startup.ENV: "0"}) is False
    assert sys.meta_path == finders
