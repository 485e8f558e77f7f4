"""The console script as a user runs it: exit codes, one-line errors, the closing summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from .conftest import REPO

CSV = (
    "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,Customer ID\n"
    + "".join(
        f"{i},A,{q},2011-0{m}-1{d} 10:00:00,{p},{c}\n"
        for i, (q, m, d, p, c) in enumerate(
            [
                (1, 1, 1, 100, "1"),
                (2, 2, 2, 100, "1"),
                (5, 3, 3, 100, "1"),
                (1, 3, 4, 100, "2.0"),
                (1, 1, 5, 1, "3"),
                (1, 1, 6, 2, "4"),
                (1, 3, 1, 1.5, "5"),
                (1, 3, 2, 90, "6"),
            ]
        )
    )
    + "x,A,1,2011-03-03 10:00:00,1,\n"
)


def _run(args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "jobs.segment_customers", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "input:\n  format: csv\n  columns: {customer_id: Customer ID}\nprepare: {cap_quantiles: null}\n"
        "catalog: {enabled: false}\n"  # the catalog has its own test (test_catalog.py)
        "model: {stability_fits: 0}\n"  # so has the choice of k (test_diagnostics.py, test_lloyd.py)
    )
    return path


def test_run_on_a_small_csv_prints_outputs_and_segments(tmp_path):
    (tmp_path / "in.csv").write_text(CSV)
    out = tmp_path / "out"
    result = _run(
        [
            "--config",
            str(_config(tmp_path)),
            "--input",
            str(tmp_path / "in.csv"),
            "--output",
            str(out),
            "--k",
            "2",
        ]
    )
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    assert "Published snapshot 2011-03-15" in stdout
    assert "rows: 9 input = 8 accepted + 1 rejected {'missing_customer_id': 1}" in stdout
    assert "customers: 6 (6 clustered, excluded none)" in stdout
    assert f"segments     {out}/segments/snapshot_date=2011-03-15" in stdout
    report = out / "reports" / "snapshot_date=2011-03-15" / "report.html"
    assert f"Report: {report}" in stdout and report.is_file()
    segments = pd.read_parquet(out / "segments")
    assert sorted(segments.customer_id) == ["1", "2", "3", "4", "5", "6"]
    table_rows = [line for line in stdout.splitlines() if line[:3].strip() in {"1", "2"}]
    assert len(table_rows) == 2
    assert "stage model: done" in result.stderr  # progress is logged


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
