"""Stage timings and progress: each stage of a run logged with its duration, the durations kept for the manifest,
and a stage that runs longer than `every_s` seconds says how far it is (Spark's tasks done of the total).

A 100M-line validate is then not ten silent minutes: every 10 s at the default log level the log says
"stage validate: 40 s so far; tasks 37/200 of 1 running Spark stage(s)". Spark's own UI is at
http://127.0.0.1:4040 while a local run lasts (docs/troubleshooting.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("segmentation.stages")

#: How often a running stage reports its progress (seconds).
PROGRESS_EVERY_S = 10.0


def spark_progress(spark: Any) -> Callable[[], str]:
    """A description of the running Spark stages' tasks (done of total), from Spark's status tracker."""
    tracker = spark.sparkContext.statusTracker()

    def describe() -> str:
        infos = [info for i in tracker.getActiveStageIds() if (info := tracker.getStageInfo(i)) is not None]
        if not infos:
            return ""
        done = sum(info.numCompletedTasks for info in infos)
        total = sum(info.numTasks for info in infos)
        return f"; tasks {done}/{total} of {len(infos)} running Spark stage(s)"

    return describe


class StageTimer:
    """Logs each stage with its duration and keeps the durations for the manifest; with `progress` (e.g.
    `spark_progress(spark)`), a stage still running after `every_s` seconds logs how far it is, every `every_s`."""

    def __init__(self, progress: Callable[[], str] | None = None, every_s: float = PROGRESS_EVERY_S) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.every_s = every_s

    @contextmanager
    def stage(self, name: str):
        log.info("stage %s: started", name)
        started = time.perf_counter()
        done = threading.Event()
        reporter = None
        if self.progress is not None:
            reporter = threading.Thread(
                target=self._report, args=(name, started, done), name=f"progress-{name}", daemon=True
            )
            reporter.start()
        try:
            yield
        finally:
            done.set()
            if reporter is not None:
                reporter.join()
        elapsed = time.perf_counter() - started
        self.timings[name] = round(elapsed, 3)
        log.info("stage %s: done in %.1f s", name, elapsed)

    def _report(self, name: str, started: float, done: threading.Event) -> None:
        while not done.wait(self.every_s):
            try:
                detail = self.progress()
            except Exception as exc:  # noqa: BLE001 - progress is a courtesy; never fail a stage for it
                detail = f"; (progress unavailable: {type(exc).__name__})"
            log.info("stage %s: %.0f s so far%s", name, time.perf_counter() - started, detail)

    def total(self) -> dict[str, float]:
        """Every stage so far and the total since the timer started."""
        return {**self.timings, "total": round(time.perf_counter() - self.started, 3)}
