"""Stage timings and progress: a long stage says how far it is while it runs, from Spark's status tracker."""

from __future__ import annotations

import logging
import re
import time

import pytest

from segmentation.timer import StageTimer, spark_progress


def test_a_long_stage_reports_progress_until_it_ends(caplog):
    calls = []

    def progress() -> str:
        calls.append(time.perf_counter())
        return f"; step {len(calls)}"

    timer = StageTimer(progress, every_s=0.05)
    with caplog.at_level(logging.INFO, logger="segmentation.stages"), timer.stage("validate"):
        time.sleep(0.32)
    lines = [r.getMessage() for r in caplog.records]
    ticks = [line for line in lines if "so far" in line]
    assert len(ticks) >= 4 and ticks[0] == "stage validate: 0 s so far; step 1"
    assert lines[0] == "stage validate: started" and lines[-1].startswith("stage validate: done in 0.3 s")
    assert timer.timings["validate"] == pytest.approx(0.32, abs=0.1)
    reported = len(calls)
    time.sleep(0.15)
    assert len(calls) == reported  # the reporter stopped with the stage


def test_a_failing_stage_records_no_timing_and_a_failing_progress_never_fails_it(caplog):
    def broken() -> str:
        raise RuntimeError("tracker gone")

    timer = StageTimer(broken, every_s=0.05)
    logs = caplog.at_level(logging.INFO, logger="segmentation.stages")
    with logs, pytest.raises(ValueError, match="bad input"), timer.stage("read"):
        time.sleep(0.12)
        raise ValueError("bad input")
    assert "read" not in timer.timings
    assert "stage read: 0 s so far; (progress unavailable: RuntimeError)" in [
        r.getMessage() for r in caplog.records
    ]


def test_spark_progress_counts_the_running_tasks(spark, caplog):
    def slow(batches):
        for batch in batches:
            time.sleep(0.8)
            yield batch

    timer = StageTimer(spark_progress(spark), every_s=0.25)
    with caplog.at_level(logging.INFO, logger="segmentation.stages"), timer.stage("features"):
        rows = spark.range(0, 8, 1, 4).mapInPandas(slow, "id long").collect()
    assert len(rows) == 8
    ticks = [r.getMessage() for r in caplog.records if "so far" in r.getMessage()]
    progress = [re.search(r"tasks (\d+)/(\d+) of (\d+) running Spark stage", t) for t in ticks]
    found = [tuple(map(int, m.groups())) for m in progress if m]
    assert found, ticks
    assert all(total == 4 and done <= 4 and stages == 1 for done, total, stages in found)
    assert spark_progress(spark)() == ""  # nothing runs now
