"""Hydra callback that writes the ablation report when a sweep ends (``hydra.callbacks``)."""

from __future__ import annotations

import logging
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
            log.error("report: %s", e)
            return
        log.info("report: %s", written)
