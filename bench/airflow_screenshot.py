"""A screenshot of the Airflow 3 UI's grid view of one DAG run, taken with headless
Chromium over the DevTools protocol (docs/img/airflow3-grid.png is made with it).

Airflow must be running (``make airflow``) with a finished run of the DAG:

    .venv/bin/python bench/airflow_screenshot.py --run-id 'scheduled__2026-11-26T00:00:00+00:00'

The page is opened twice in one browser profile: the first visit goes through the
simple auth manager's login redirect (every user is admin, no password; it leaves
the token cookie), the second shows the run. Chromium's own ``--screenshot`` flag
cannot do this: it loads one URL and lands on the home page after the redirect.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

PROJECT = Path(__file__).resolve().parents[1]


async def _screenshot(port: int, urls: list[str], settle_s: float) -> bytes:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        pages: list = []
        for _ in range(200):
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            if pages:
                break
            await asyncio.sleep(0.05)
        if not pages:
            raise SystemExit("error: Chromium opened no page")
        async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params) -> dict:
                call_id = next(ids)
                await ws.send_json({"id": call_id, "method": method, "params": params})
                async for message in ws:
                    answer = json.loads(message.data)
                    if answer.get("id") == call_id:
                        if "error" in answer:
                            raise SystemExit(f"error: {method}: {answer['error']}")
                        return answer["result"]
                raise SystemExit(f"error: no answer to {method}")

            await call("Page.enable")
            for url in urls:
                await call("Page.navigate", url=url)
                # A single-page app: its load event comes before the API calls that
                # fill it, so wait a fixed time after navigating.
                await asyncio.sleep(settle_s)
            shot = await call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"])


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise SystemExit(f"error: Chromium exited with {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit("error: Chromium did not open its DevTools port")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://localhost:8080", help="Airflow's API server")
    parser.add_argument("--dag-id", default="mnist_cnn")
    parser.add_argument("--run-id", required=True, help="the DAG run to show")
    parser.add_argument("--output", type=Path, default=PROJECT / "docs/img/airflow3-grid.png")
    parser.add_argument("--size", default="1600,900", help="window width,height")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds per page")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium not found (make browser installs Debian's)", file=sys.stderr)
        return 1
    base = args.url.rstrip("/")
    run_url = f"{base}/dags/{quote(args.dag_id)}/runs/{quote(args.run_id, safe='')}"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={args.size}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = _devtools_port(Path(profile), proc)
            png = asyncio.run(_screenshot(port, [f"{base}/", run_url], args.settle))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    args.output.write_bytes(png)
    print(f"{args.output}: {len(png):,} bytes, {run_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
