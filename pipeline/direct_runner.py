"""Beam's DirectRunner without its first attempt on the Prism runner.

Beam 2.7x's ``DirectRunner`` (``SwitchingDirectRunner``) first submits every
pipeline to the Prism runner, a Go binary it looks for on disk and otherwise
downloads; only when that fails does it run the pipeline on the FnApiRunner, in
this process. On a machine without the binary (and without access to where Beam
downloads it from) each TFX Beam component pays for the attempt: Prism's
environment stages the pipeline's ``--setup_file`` (an sdist of this project,
``setup.py sdist`` in a temp dir) and the download is tried, before the fallback
runs the same FnApiRunner it always ends on here.

``LocalDirectRunner`` is that DirectRunner with the attempt left out, through the
switch Beam's own InteractiveRunner uses to keep the DirectRunner off Prism
(``is_interactive``). Everything else is Beam's: the ``--direct_running_mode``
and ``--direct_num_workers`` options, the FnApiRunner with the pipeline options
in its provision info, and the BundleBasedDirectRunner for what the FnApiRunner
cannot run. ``pipeline.beam_runners.without_prism_attempt`` names it in the
arguments of runs whose executors live on this machine (the local runner and
Airflow's tasks); compiled Kubeflow specs keep Beam's name.
"""

from __future__ import annotations

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

# What ``--runner`` names: Beam imports a dotted name's module and builds its class.
RUNNER_NAME = f"{__name__}.LocalDirectRunner"


class LocalDirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner, minus the Prism attempt (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        # SwitchingDirectRunner.run_pipeline offers a pipeline to Prism only when
        # this flag is unset; Beam's InteractiveRunner sets it for the same reason.
        self.is_interactive()
