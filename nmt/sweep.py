"""Hydra callback that writes the ablation report when a sweep ends (``hydra.callbacks``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("nmt")


class ReportCallback(Callback):
    """After the last job of a multirun: ``nmt.report.write_report(<sweep dir>)``."""

    def __init__(self, out: str | None = None):
        self.out = out

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nmt import report  # imported late: the jobs never need matplotlib

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            written = report.write_report(sweep_dir, Path(self.out) if self.out else None)
        except report.ReportError as e:
            # Every run is saved; only the report is missing. Say how to rebuild it, and make
            # the sweep's exit status say that it did not finish.
            print(
                f"error: report: {e}; the runs are complete, rebuild the report with: "
                f"python scripts/report.py {sweep_dir}",
                file=sys.stderr,
            )
            sys.exit(1)
        log.info("report: %s", written)
