"""Benchmark: how fast stream-segments reflects new files (issue target: a 10,000-line file in customer_state
within 5 s, p95 over 20 files, and at least 50,000 lines/s absorbed without a growing backlog), with the state
of the 10M benchmark's model (about 250,000 customers).

Needs a published model and its training input (`scripts/bench_recommend.py` leaves both: the `off0` output
and `data/transactions`). Seeds the stream's state once (`--work`/seed, reused by later runs), then starts
`stream-segments --trigger-seconds 1` on a copy and

1. latency: drops one warm-up file (it moves the state's date: every customer re-scored once), then `--files`
   files of `--lines-per-file` new lines one at a time (written under a hidden name, then renamed), each timed
   from its rename to the commit of the version that holds it;
2. sustained load: renames files into the landing folder at `--rate` lines/s for `--duration` s, then waits
   until every line is committed; the backlog is the lines landed but not committed, sampled every second.

The new lines are lines of the training input with a new invoice number and a timestamp on the model's
snapshot date, so they are no duplicates and touch the customers a real day's orders would.

    .venv/bin/python scripts/bench_stream.py --model /tmp/b/off0 --config /tmp/b/off0.yaml \\
        --data /tmp/b/data/transactions --work /tmp/bench-stream --json benchmarks/stream_10m.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def stream_command(args, run: Path, *options: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "jobs.stream_segments",
        "--model-path",
        str(args.model),
        "--config",
        str(args.config),
        "--landing",
        str(run / "landing"),
        "--output",
        str(run / "live"),
        "--checkpoint",
        str(run / "ckpt"),
        *options,
    ]


def new_lines(data: Path, files: int, lines: int, day: str) -> list[pa.Table]:
    """`files` tables of `lines` lines drawn evenly from the training input, re-dated to `day`, new invoices."""
    table = ds.dataset(str(data)).to_table()
    step = max(1, table.num_rows // (files * lines))
    out = []
    for f in range(files):
        rows = table.take(pa.array([(f * lines + i) * step for i in range(lines)]))
        n = rows.num_rows
        invoices = pa.array([f"9{f:05d}{i // 10:05d}" for i in range(n)])
        times = pa.array([f"{day} {8 + (i % 10):02d}:{(i // 10) % 60:02d}:00" for i in range(n)])
        rows = rows.set_column(rows.schema.get_field_index("InvoiceNo"), "InvoiceNo", invoices)
        rows = rows.set_column(rows.schema.get_field_index("InvoiceDate"), "InvoiceDate", times)
        out.append(rows)
    return out


def drop(table: pa.Table, landing: Path, name: str) -> float:
    """Write under a hidden name, rename into the landing folder; the time of the rename."""
    hidden = landing / f".{name}.parquet"
    pq.write_table(table, hidden)
    os.utime(hidden)
    moment = time.time()
    hidden.rename(landing / f"{name}.parquet")
    return moment


def commits(run: Path) -> list[int]:
    folder = run / "live" / "_state" / "commits"
    return sorted(int(p.stem) for p in folder.glob("*.json")) if folder.exists() else []


def committed_lines(run: Path) -> int:
    try:
        return int(
            duckdb.sql(
                f"select coalesce(sum(input_rows), 0) from read_parquet('{run}/live/stream_progress/*/*.parquet')"
            ).fetchall()[0][0]
        )
    except duckdb.Error:
        return 0


def wait_commit(run: Path, after: int, proc, timeout: float = 300) -> float:
    started = time.time()
    while True:
        done = commits(run)
        if done and done[-1] > after:
            return time.time()
        if proc.poll() is not None:
            raise RuntimeError(f"the stream exited with {proc.returncode}")
        if time.time() - started > timeout:
            raise RuntimeError("no commit within the timeout")
        time.sleep(0.05)


def seed(args) -> dict:
    seed_dir = args.work / "seed"
    if (seed_dir / "live" / "_state" / "commits" / "0.json").exists():
        return json.loads((seed_dir / "seed.json").read_text())
    shutil.rmtree(seed_dir, ignore_errors=True)
    (seed_dir / "landing").mkdir(parents=True)
    started = time.time()
    subprocess.run(stream_command(args, seed_dir, "--available-now"), check=True, cwd=REPO)
    info = {"seed_s": round(time.time() - started, 1)}
    (seed_dir / "seed.json").write_text(json.dumps(info))
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the model's training input (Parquet)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--lines-per-file", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=50_000, help="lines per second of the sustained load")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sustained load")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"machine": f"{os.cpu_count()} cores", **seed(args)}
    snapshot = json.loads(next((args.model / "manifests").glob("*/manifest.json")).read_text())[
        "snapshot_date"
    ]
    per_second = max(1, args.rate // args.lines_per_file)
    sustained = int(per_second * args.duration)
    tables = new_lines(args.data, 1 + args.files + sustained, args.lines_per_file, snapshot)
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(args.work / "seed", run)
    log = open(run / "stream.log", "w")  # noqa: SIM115 - the stream's log while it runs, closed below
    proc = subprocess.Popen(
        stream_command(args, run, "--trigger-seconds", "1"), cwd=REPO, stdout=log, stderr=log
    )
    try:
        while not (run / "ckpt" / "metadata").exists():  # the query has started
            time.sleep(0.2)
        landed = drop(tables[0], run / "landing", "warm-up")
        result["warm_up_s"] = round(wait_commit(run, commits(run)[-1], proc) - landed, 2)
        latencies = []
        for i in range(args.files):
            last = commits(run)[-1]
            landed = drop(tables[1 + i], run / "landing", f"file-{i:03d}")
            latencies.append(wait_commit(run, last, proc) - landed)
        result["latency_s"] = {
            "files": args.files,
            "lines_per_file": args.lines_per_file,
            "median": round(statistics.median(latencies), 2),
            "p95": round(sorted(latencies)[max(0, int(0.95 * len(latencies)) - 1)], 2),
            "max": round(max(latencies), 2),
            "each": [round(x, 2) for x in latencies],
        }
        base = committed_lines(run)
        backlog, started = [], time.time()
        queue = tables[1 + args.files :]
        for second in range(int(args.duration)):
            for j in range(per_second):
                drop(queue[second * per_second + j], run / "landing", f"load-{second:04d}-{j}")
            landed_lines = (second + 1) * per_second * args.lines_per_file
            backlog.append(landed_lines - (committed_lines(run) - base))
            time.sleep(max(0.0, started + second + 1 - time.time()))
        total = sustained * args.lines_per_file
        while committed_lines(run) - base < total:
            if proc.poll() is not None:
                raise RuntimeError(f"the stream exited with {proc.returncode}")
            time.sleep(0.2)
        elapsed = time.time() - started
        batches = duckdb.sql(
            f"select input_rows, duration_s from read_parquet('{run}/live/stream_progress/*/*.parquet') "
            f"where kind = 'batch' order by version"
        ).fetchall()[1 + args.files :]
        result["sustained"] = {
            "offered_lines_per_s": per_second * args.lines_per_file,
            "seconds": args.duration,
            "lines": total,
            "absorbed_lines_per_s": round(total / elapsed, 0),
            "drain_s_after_load": round(elapsed - args.duration, 1),
            "backlog_lines_every_10_s": backlog[::10],
            "batches": len(batches),
            "median_batch_lines": statistics.median(b[0] for b in batches) if batches else 0,
            "median_batch_s": statistics.median(b[1] for b in batches) if batches else 0,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
    result["customers"] = int(
        duckdb.sql(f"select count(*) from read_parquet('{run}/live/customer_state/*.parquet')").fetchall()[0][
            0
        ]
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
