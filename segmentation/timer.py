"""Stage timings: each stage of a run logged with its duration, the durations kept for the manifest."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

log = logging.getLogger("segmentation.pipeline")


class StageTimer:
    """Logs each stage with its duration and keeps the durations for the manifest."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("stage %s: started", name)
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        self.timings[name] = round(elapsed, 3)
        log.info("stage %s: done in %.1f s", name, elapsed)

    def total(self) -> dict[str, float]:
        """Every stage so far and the total since the timer started."""
        return {**self.timings, "total": round(time.perf_counter() - self.started, 3)}
