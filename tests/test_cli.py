"""The console script as a user runs it: exit codes, one-line errors, the closing summary."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pandas as pd

from . import synthetic
from .conftest import REPO


def _run(args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "jobs.segment_customers", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_run_prints_outputs_and_segments(console_snapshots):
    """The first run of the shared console-script fixture (conftest.py): the synthetic log's 30 customers in
    three planted groups, a malformed line and a line without customer."""
    run, out = console_snapshots.runs[0], console_snapshots.out
    rows = synthetic.transactions()
    day = (max(dt.date.fromisoformat(ts[:10]) for _, _, ts, _, _ in rows) + dt.timedelta(days=1)).isoformat()
    customers = sum(n for n, *_ in synthetic.GROUPS.values())
    stdout = run.stdout
    assert f"Published snapshot {day}" in stdout
    assert (
        f"rows: {len(rows) + 2} input = {len(rows)} accepted + 2 rejected "
        "{'malformed_row': 1, 'missing_customer_id': 1}"
    ) in stdout
    assert f"customers: {customers} ({customers} clustered, excluded none)" in stdout
    assert f"segments{' ' * 12}{out}/segments/snapshot_date={day}" in stdout
    report = out / "reports" / f"snapshot_date={day}" / "report.html"
    assert f"Report: {report}" in stdout and report.is_file()
    segments = pd.read_parquet(out / "segments" / f"snapshot_date={day}")
    # ids as written in the log ("1000.0") come out normalized ("1000")
    assert sorted(segments.customer_id) == sorted({c for _, c, _, _, _ in rows})
    # the segment table: one line per segment, its customers as in the segments table
    table = {
        int(line[:3]): int(line[24:33].replace(",", ""))
        for line in stdout.splitlines()
        if line[:3].strip().isdigit()
    }
    assert table == segments.groupby("segment_id").size().to_dict()
    assert sorted(table.values()) == sorted(n for n, *_ in synthetic.GROUPS.values())
    assert "stage model: done" in run.stderr  # progress is logged


def test_without_java_one_line_says_what_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # nothing on PATH, not even java
    result = _run(["--output", str(tmp_path / "out")], env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "segment-customers: error: Java was not found: install Java 17 or newer "
        "(e.g. `apt-get install openjdk-17-jre-headless`) and put it on PATH or set JAVA_HOME"
    ]


def test_config_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {k_min: 8, k_max: 3}\n")
    result = _run(["--config", str(bad)])
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "segment-customers: error: invalid k range: k_min 8 is greater than k_max 3"
    )


def test_missing_input_is_one_line_and_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    result = _run(["--input", str(tmp_path / "missing"), "--output", str(out)])
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error_lines == [f"segment-customers: error: input not found: {tmp_path / 'missing'}"]
    assert not any(out.rglob("*.parquet"))
    assert list(out.iterdir()) == []  # the staging area is cleaned up


def test_unwritable_output_is_one_line_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = _run(["--output", str(blocker / "out")])
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("segment-customers: error: output path is not writable: "), error_lines
    assert f"{blocker}/out" in error_lines[0]
    assert "Parent path is not a directory" in error_lines[0]  # the cause, not a Py4J call id
    assert "stage read" not in result.stderr  # it stopped before reading the input
    assert blocker.read_text() == "not a directory\n"


def test_the_segment_table_is_as_wide_as_the_longest_name():
    from jobs.segment_customers import summary_lines

    profile = {
        "customers": 1458,
        "share_customers": 0.395,
        "share_revenue": 0.143,
        "median_recency_days": 134.0,
        "median_frequency": 1.0,
        "median_monetary": 252.0,
    }
    manifest = {
        "snapshot_date": "2011-12-10",
        "run_id": "r",
        "input_rows": 10,
        "accepted_rows": 10,
        "rejected_rows": {},
        "customers": 2,
        "clustered_customers": 2,
        "excluded_customers": {},
        "chosen_k": 2,
        "chosen_k_reason": "fixed",
        "output_path": "/out",
        "report": False,
        "profiles": [
            {**profile, "segment_id": 1, "segment_name": "Champions"},
            {**profile, "segment_id": 2, "segment_name": "Needs attention (occasional)"},
        ],
    }
    lines = summary_lines(manifest)
    rows = [line for line in lines if line.startswith(("  1  ", "  2  "))]
    header = next(line for line in lines if line.startswith(" id  segment"))
    # the customers column ends where its header ends, whatever the name's length
    assert [row.index("1,458") + len("1,458") for row in rows] == [header.index("customers") + 9] * 2
