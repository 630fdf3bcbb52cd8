"""Compare what the served model received with what it was trained on: read the server's
request logs (``mnist-tfx serve --logging-config``) of a time window, profile the images
as the data validator profiles training data, plus the classes the model gave, and
compare with TFDV's comparators against the answering version's training data (skew)
and the previous window (drift). Writes an HTML page and JSON; exit 6 when a distance
is beyond its bound, 7 when the window holds no logged request."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

from cli.errors import EXIT_NO_REQUESTS, EXIT_OK, EXIT_SKEW
from components.data_validator.profile import (
    DEFAULT_MAX_DRIFT,
    DEFAULT_MAX_LABEL_DRIFT,
    PROFILE_FEATURES,
)
from ingest.errors import UsageError
from pipeline import run_flags
from serving import object_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    parser.add_argument(
        "--log-prefix",
        required=True,
        help="the filename_prefix of the server's LoggingConfig: reads PREFIX.*.tfrecord",
    )
    parser.add_argument(
        "--output-root",
        type=Path,
        default=Path("tfx_output"),
        help="default parent of --model-base-path (OUTPUT_ROOT/serving/<dataset>) and "
        "--report-dir (default: ./tfx_output)",
    )
    parser.add_argument(
        "--model-base-path",
        type=object_store.base_path,
        help="where the served versions are (default: OUTPUT_ROOT/serving/<dataset>); the "
        "version that answered most of the window's requests gives the training profile",
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=3600.0,
        help="length of the window, ending at --until (default 3600); the previous window "
        "of the same length is the drift baseline",
    )
    parser.add_argument(
        "--until",
        type=_time,
        help="end of the window: seconds since the epoch or an ISO 8601 time (default: now)",
    )
    parser.add_argument(
        "--max-skew",
        type=float,
        default=DEFAULT_MAX_DRIFT,
        help="bound on the Jensen-Shannon divergence of each image feature from the training "
        f"data and from the previous window (default {DEFAULT_MAX_DRIFT:g})",
    )
    parser.add_argument(
        "--max-class-skew",
        type=float,
        default=DEFAULT_MAX_LABEL_DRIFT,
        help="bound on the L-infinity distance of the predicted-class distribution from the "
        f"training labels and from the previous window (default {DEFAULT_MAX_LABEL_DRIFT:g})",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        help="write index.html and monitor.json here (default: "
        "OUTPUT_ROOT/monitor/<dataset>/<window end, UTC>)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON instead of lines")


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds since the epoch or an ISO 8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    from ingest.datasets import get_dataset
    from pipeline import monitor
    from report.monitor_page import draw_distributions, draw_sample_grid, render_monitor_html
    from serving.request_log import log_files, read_prediction_logs

    if args.window_seconds <= 0:
        raise UsageError(f"--window-seconds: expected > 0, got {args.window_seconds:g}")
    for flag, value in (("--max-skew", args.max_skew), ("--max-class-skew", args.max_class_skew)):
        if not 0 <= value <= 1:
            raise UsageError(f"{flag}: expected 0..1, got {value:g}")
    end = args.until if args.until is not None else time.time()
    start = end - args.window_seconds
    base_path = args.model_base_path or args.output_root / "serving" / args.dataset
    class_names = get_dataset(args.dataset).class_names
    if not log_files(args.log_prefix):
        print(
            f"no request logs: no file matches {args.log_prefix}.*.tfrecord (is the server "
            "started with --logging-config, and has it closed a file yet?)"
        )
        return EXIT_NO_REQUESTS
    logs = read_prediction_logs(args.log_prefix)
    current = monitor.read_window(logs.records, start, end)
    if not current.num_images:
        print(
            f"no logged requests between {_stamp(start)} and {_stamp(end)} UTC in "
            f"{logs.files} file(s) of {args.log_prefix} ({len(logs.records)} records outside "
            f"the window, {len(logs.corrupt_files)} corrupt file(s) skipped)"
        )
        return EXIT_NO_REQUESTS
    previous = monitor.read_window(logs.records, start - args.window_seconds, start)
    version = current.versions.most_common(1)[0][0]
    try:
        training = monitor.training_profile(str(base_path), version)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    served = current.profile()
    findings = monitor.compare("skew", served, training, args.max_skew, args.max_class_skew)
    drift_note = ""
    if previous.num_images:
        findings += monitor.compare(
            "drift", served, previous.profile(), args.max_skew, args.max_class_skew
        )
    else:
        drift_note = "drift not measured: no logged requests in the previous window"
    beyond = [f for f in findings if f.beyond]
    verdict = (
        f"{len(beyond)} distance(s) beyond their bounds: "
        + "; ".join(f"{f.kind} of {f.feature} {f.distance:.4f} > {f.bound:g}" for f in beyond)
        if beyond
        else "no skew or drift beyond the bounds"
    )
    facts = {
        "model": args.dataset,
        "verdict": verdict,
        "beyond": bool(beyond),
        "window_start": _stamp(start),
        "window_end": _stamp(end),
        "records": current.records,
        "images": current.num_images,
        "undecodable": current.undecodable,
        "versions": {str(v): c for v, c in sorted(current.versions.items())},
        "signatures": dict(sorted(current.signatures.items())),
        "reference_version": version,
        "training_examples": training.num_examples,
        "previous_images": previous.num_images,
        "files": logs.files,
        "corrupt_files": logs.corrupt_files,
        "findings": monitor.to_json(findings),
        "drift_note": drift_note,
        "served_means": {name: round(served.mean(name), 4) for name in PROFILE_FEATURES},
        "training_means": {name: round(training.mean(name), 4) for name in PROFILE_FEATURES},
        "predicted_class_counts": served.label_counts,
    }
    report_dir = args.report_dir or (
        args.output_root
        / "monitor"
        / args.dataset
        / datetime.fromtimestamp(end, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    profiles = {"training": training, "served": served}
    if previous.num_images:
        profiles["previous window"] = previous.profile()
    pngs = {
        "samples": draw_sample_grid(current.images, current.predicted, class_names),
        "distributions": draw_distributions(profiles, list(PROFILE_FEATURES), class_names),
    }
    (report_dir / "index.html").write_text(render_monitor_html(facts, pngs), encoding="utf-8")
    (report_dir / "monitor.json").write_text(monitor.dumps(facts) + "\n", encoding="utf-8")
    if args.json:
        print(monitor.dumps(facts))
    else:
        print(
            f"window {_stamp(start)} - {_stamp(end)} UTC: {current.num_images} images in "
            f"{current.records} logged requests, answered by version(s) "
            f"{', '.join(facts['versions'])}; training profile of version {version}"
        )
        if logs.corrupt_files:
            print(f"skipped {len(logs.corrupt_files)} corrupt log file(s)")
        for finding in findings:
            print(monitor.describe(finding))
        if drift_note:
            print(drift_note)
        print(f"verdict: {verdict}")
        print(f"report: {(report_dir / 'index.html').resolve().as_uri()}")
    return EXIT_SKEW if beyond else EXIT_OK
