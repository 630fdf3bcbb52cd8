"""The serving benchmark's load generator (``bench/bench_serving.py``) against the shared
test server, briefly: its REST and gRPC clients get answers, every figure the table
needs is there, and the table prints the target lines. Not a performance test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import shutil

import numpy as np
import pytest

from tests.serving_fixture import MODEL_NAME, REPO, shared_server


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench/bench_serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_row_figures(row: dict, clients: tuple[int, ...], *, positive_cpu: str) -> None:
    """Every figure a table row needs: p50 <= p99, and per number of clients images/s,
    mean batch and both CPU figures, the ``positive_cpu`` side's ("client" or
    "server") above zero."""
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    for count in clients:
        assert row[f"c{count}_images_per_s"] > 0
        assert row[f"c{count}_mean_batch"] >= 1
        assert row[f"c{count}_server_cpu_ms"] >= 0
        assert row[f"c{count}_client_cpu_ms"] >= 0
        assert row[f"c{count}_{positive_cpu}_cpu_ms"] > 0


def table_figures(results: dict, batch32: float, *, load: str = "1 1 1", **more) -> dict:
    """The figures ``format_figures`` reads: a direct call of p50 1 ms / p99 2 ms with
    ``batch32`` images/s for a batch of 32, ``results`` for both batching modes
    (``more`` adds or replaces entries)."""
    return {
        "model": "m/1",
        "cpus": 2,
        "load_average_start": load,
        "load_average_end": load,
        "direct": {"p50_ms": 1.0, "p99_ms": 2.0, "batch32_images_per_s": batch32},
        "batching_on": results,
        "batching_off": results,
        **more,
    }


def test_load_generator_measures_rest_and_grpc(bench):
    server = shared_server()
    args = bench.parse_args(
        [
            "--load-generator",
            "--model-name", MODEL_NAME,
            "--rest-port", str(server.rest_port),
            "--grpc-port", str(server.grpc_port),
            "--server-pid", str(server.process.pid),
            "--requests", "20", "--seconds", "0.3", "--clients", "1,4",
        ]
    )  # fmt: skip
    results = asyncio.run(bench.run_load(args))
    for api in ("rest", "grpc", "grpc_bytes"):
        assert_row_figures(results[api], (1, 4), positive_cpu="client")
    figures = table_figures(
        results, 3000.0, load="0.10 0.20 0.30", load_average_end="0.40 0.50 0.60"
    )
    table = bench.format_figures(figures, (1, 4))
    assert "load average (1/5/15 min) 0.10 0.20 0.30 at the start" in table
    assert "target: 4 clients with batching (direct batch-of-32 mean 3,000 images/s): REST" in (
        table
    )
    assert "target: REST single-image p50 <= 2x the direct call" in table
    assert table.count("| batching on |") == 3 and table.count("| batching off |") == 3
    assert table.count("| grpc, bytes |") == 2
    assert "; gRPC with prebuilt bytes " in table
    assert not any(math.isnan(v) for v in results["rest"].values())


def test_targets_count_against_the_mean_direct_call(bench):
    """A server meets the throughput target at its fixed figure or at 80 % of the direct
    batch-of-32 call, averaged over its measurements before and after the servers."""
    row = {"p50_ms": 1.5, "p99_ms": 3.0}
    rates = {"rest": 1700.0, "grpc": 1500.0}
    results = {
        api: {
            **row,
            "c32_images_per_s": rate,
            "c32_mean_batch": 20.0,
            "c32_client_cpu_ms": 0.1,
            "c32_server_cpu_ms": 0.5,
        }
        for api, rate in rates.items()
    }
    figures = table_figures(results, 2500.0)
    figures["direct"]["batch32_end_images_per_s"] = 1500.0
    table = bench.format_figures(figures, (32,))
    assert "batch of 32: 2,500 images/s before the servers, 1,500 after" in table
    assert "REST 1,700 (>= 2,500, or 85% of direct batch-of-32 >= 80%) -> met" in table
    assert "gRPC 1,500 (>= 2,000, or 75% of direct batch-of-32 >= 80%) -> NOT met" in table
    assert "p50 <= 2x the direct call: 1.50x -> met" in table


def test_rest_client_refuses_an_error_reply(bench):
    """A reply other than 200 stops the run rather than counting as an answer."""
    server = shared_server()
    request = bench.rest_request(
        "127.0.0.1", server.rest_port, "no_such_model", np.zeros((28, 28), np.uint8)
    )

    async def call() -> None:
        client = bench.RestClient("127.0.0.1", server.rest_port, request)
        try:
            await client.call()
        finally:
            await client.close()

    with pytest.raises(RuntimeError, match="HTTP 404"):
        asyncio.run(call())


def test_variants_add_rows_and_verdicts_of_their_own(bench):
    """``--variant LABEL=FLAGS`` starts one more batching server with those flags: its
    rows follow the default servers' and its verdicts are named by its label."""
    args = bench.parse_args(["--variant", "two threads=--model-threads 2 --tf-intra-op-threads 1"])
    assert args.variant == [("two threads", ("--model-threads", "2", "--tf-intra-op-threads", "1"))]
    modes = bench.server_modes(args.variant)
    assert modes[2] == (
        "batching on, two threads",
        True,
        ("--model-threads", "2", "--tf-intra-op-threads", "1"),
    )
    fast = {"p50_ms": 1.5, "p99_ms": 3.0, "c32_mean_batch": 20.0, "c32_client_cpu_ms": 0.1}
    slow = {**fast, "c32_images_per_s": 100.0}
    fast = {**fast, "c32_images_per_s": 2600.0}
    figures = table_figures(
        {"rest": slow, "grpc": slow},
        3000.0,
        modes=[mode for mode, _, _ in modes],
        **{"batching on, two threads": {"rest": fast, "grpc": fast}},
    )
    table = bench.format_figures(figures, (32,))
    assert table.count("| batching on, two threads |") == 2
    assert "): REST 100 (>= 2,500, or 3% of direct batch-of-32 >= 80%) -> NOT met" in table
    assert "batching on, two threads: REST 2,600 (>= 2,500, or 87% of direct" in table


@pytest.mark.parametrize("text", ["no-equals-sign", "=--model-threads 2"])
def test_a_variant_without_a_label_is_refused(bench, text, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--variant", text])
    assert "expected LABEL=SERVER_FLAGS" in capsys.readouterr().err


def _h2load_or_skip() -> None:
    # `make test` installs it (make h2load); only a bare pytest run may lack it.
    if shutil.which("h2load") is None:
        pytest.skip("h2load not installed (Debian's nghttp2-client): run `make h2load`")


def test_h2load_runs_are_checked_against_the_servers_ok_count(bench, tmp_path):
    """Real h2load against the shared server: the Predict body in gRPC framing is
    answered OK every time (the server's own counter moves by exactly h2load's count),
    and the benchmark's gRPC-with-h2load row has every figure the table needs."""
    _h2load_or_skip()
    server = shared_server()
    image = np.zeros((28, 28), np.uint8)
    body = tmp_path / "predict.grpc"
    message = bench.predict_request(MODEL_NAME, image).SerializeToString()
    body.write_bytes(bench.grpc_frame(message))
    assert body.read_bytes()[:5] == b"\x00" + len(message).to_bytes(4, "big")
    load = bench.H2Load("127.0.0.1", server.grpc_port, server.rest_port, MODEL_NAME, body)
    before = bench.predicts_answered_ok(load.metrics_url, MODEL_NAME)
    counts = load.run(4, requests=40)
    assert counts["done"] == counts["succeeded"] == 40
    assert bench.predicts_answered_ok(load.metrics_url, MODEL_NAME) - before == 40
    assert counts["seconds"] > 0 and counts["cpu_s"] >= 0

    args = bench.parse_args(
        ["--model-name", MODEL_NAME, "--requests", "20", "--seconds", "0.3", "--clients", "1,4"]
    )
    # h2load's own CPU time can round to 0 in a short run; the server's cannot.
    assert_row_figures(
        bench.measure_h2load(server, args, image, tmp_path), (1, 4), positive_cpu="server"
    )


def test_an_h2load_run_with_errors_fails(bench, tmp_path):
    """gRPC answers errors with HTTP 200, which h2load counts as success: a signature
    the model lacks gets FAILED_PRECONDITION for every request, and the run must fail
    on the server's OK count, naming both numbers."""
    _h2load_or_skip()
    server = shared_server()
    request = bench.predict_request(MODEL_NAME, np.zeros((28, 28), np.uint8))
    request.model_spec.signature_name = "no_such_signature"
    body = tmp_path / "predict.grpc"
    body.write_bytes(bench.grpc_frame(request.SerializeToString()))
    load = bench.H2Load("127.0.0.1", server.grpc_port, server.rest_port, MODEL_NAME, body)
    with pytest.raises(RuntimeError) as failed:
        load.run(2, requests=10)
    assert "10 requests done (0 failed, 0 errored, 0 timed out)" in str(failed.value)
    assert "the server answered 0 Predict calls for model 'mnist' with OK" in str(failed.value)


def test_h2load_output_without_a_summary_is_refused(bench):
    """h2load prints the run time in us, ms or s; no summary at all is an error."""
    summary = "requests: 4 total, 4 started, 4 done, 4 succeeded, 0 failed, 0 errored, 0 timeout"
    for printed, seconds in (("158us", 158e-6), ("22.36ms", 0.02236), ("10.00s", 10.0)):
        counts = bench.h2load_counts(f"finished in {printed}, 0.00 req/s, 0B/s\n{summary}\n")
        assert counts["seconds"] == pytest.approx(seconds)
        assert counts["started"] == counts["done"] == counts["succeeded"] == 4
    with pytest.raises(ValueError, match="h2load printed no summary"):
        bench.h2load_counts("connect error: Connection refused\n")


def test_the_h2load_row_gets_its_own_verdict(bench):
    row = {"p50_ms": 1.5, "p99_ms": 3.0, "c32_mean_batch": 12.0, "c32_client_cpu_ms": 0.02}
    results = {
        "rest": {**row, "c32_images_per_s": 2600.0},
        "grpc": {**row, "c32_images_per_s": 1600.0},
        "grpc_h2load": {**row, "c32_images_per_s": 2100.0},
    }
    figures = table_figures(results, 6000.0)
    table = bench.format_figures(figures, (32,))
    assert table.count("| grpc, h2load |") == 2
    assert "; gRPC 1,600 (>= 2,000, or 27% of direct batch-of-32 >= 80%) -> NOT met" in table
    assert "; gRPC with h2load 2,100 (>= 2,000, or 35% of direct batch-of-32 >= 80%) -> met" in (
        table
    )
    assert "h2load not installed" not in table
    assert "h2load not installed: `make h2load`" in bench.format_figures(
        {**figures, "h2load_missing": True}, (32,)
    )
