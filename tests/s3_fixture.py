"""A real, local S3 endpoint for the object-store tests: ``moto_server`` (moto[server])
on a free 127.0.0.1 port, started as a subprocess and stopped by the test.

``S3Server.env`` is what a subprocess needs to reach it through TensorFlow's S3
filesystem (tensorflow-io): ``S3_ENDPOINT`` with its ``http://`` scheme, dummy AWS
keys, a region, and ``AWS_EC2_METADATA_DISABLED`` so the AWS SDK never looks for
instance credentials beyond this machine. Work that touches ``s3://`` from TensorFlow
runs in subprocesses (``run_python``), judged by their output: tensorflow-io 0.37.1
aborts at exit after S3 use unless ``serving/object_store.py``'s exit guard runs, and
the test process stays free of that plugin.

``auth=True`` starts a server that checks IAM (moto's ``/moto-api/reset-auth``): the
setup (bucket, users, policies, keys) runs unauthenticated first, then every request
must be signed by a known key and allowed by its user's policy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import requests

from tests.serving_fixture import free_port

REPO = Path(__file__).resolve().parents[1]
MOTO_SERVER = Path(sys.executable).with_name("moto_server")
DUMMY_KEY = "testing"  # moto accepts any key while it does not check IAM
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


class S3Server:
    """``moto_server`` on 127.0.0.1 with one bucket; use as a context manager."""

    def __init__(self, log_dir: Path, bucket: str = "serving", auth: bool = False) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.auth = auth
        self.log_path = log_dir / f"moto-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
        )
        self.keys: dict[str, tuple[str, str]] = {}
        try:
            self._wait_ready()
            self.client().create_bucket(Bucket=bucket)
            if auth:
                self.add_user("admin", ADMIN_POLICY)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_path.read_text()}")
            try:
                requests.get(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"moto_server not up after {timeout} s")

    def client(self, service: str = "s3", keys: tuple[str, str] | None = None):
        key, secret = keys or self.keys.get("admin") or (DUMMY_KEY, DUMMY_KEY)
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

    def add_user(self, name: str, policy: dict) -> tuple[str, str]:
        """An IAM user with ``policy`` inline and an access key; call before ``enforce``."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        created = iam.create_access_key(UserName=name)["AccessKey"]
        self.keys[name] = (created["AccessKeyId"], created["SecretAccessKey"])
        return self.keys[name]

    def enforce(self) -> None:
        """From now on every request is authenticated and authorised against IAM."""
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=5)

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def env(self, keys: tuple[str, str] | None = None) -> dict[str, str]:
        key, secret = keys or self.keys.get("admin") or (DUMMY_KEY, DUMMY_KEY)
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "S3_ENDPOINT": self.endpoint,
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }

    def objects(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in the bucket, read with boto3 (no TensorFlow)."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_python(
    code: str, env: dict[str, str], timeout: float = 300.0, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``python -c code *args`` in the repository with ``env``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
