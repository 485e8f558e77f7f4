"""Benchmark: what the recommend stage adds to a run (issue target: at most +50% of the job's wall time at 10M).

Generates the 10M-line log (products with planted preferences) unless --data is given, then runs the job on
it with `recommend.enabled: false` and with the defaults, in turn, `--runs` times each, and writes the wall
times, the stage timings and the recommendation evaluation's headline to --json.

    .venv/bin/python scripts/bench_recommend.py --lines 10M --json benchmarks/recommend_10m.json
    .venv/bin/python scripts/bench_recommend.py --data /tmp/g10m --runs 1
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def generate(lines: str, out: Path) -> None:
    subprocess.run(
        [PYTHON, str(REPO / "jobs" / "generate_transactions.py"), "--lines", lines, "--out", str(out)],
        check=True,
    )


def run_job(data: Path, out: Path, recommend: bool) -> dict:
    """One run of segment-customers; wall seconds, stage timings and the recommend manifest entry."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(
        f"input:\n  path: {data / 'transactions'}\noutput:\n  path: {out}\n"
        f"recommend:\n  enabled: {'null' if recommend else 'false'}\n",
        encoding="utf-8",
    )
    started = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w", encoding="utf-8") as log:
        subprocess.run(
            [PYTHON, "-m", "jobs.segment_customers", "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            env={**os.environ, "SPARK_MASTER": os.environ.get("SPARK_MASTER", "local[2]")},
        )
    wall = time.perf_counter() - started
    manifest = json.loads(Path(glob.glob(f"{out}/manifests/snapshot_date=*/manifest.json")[0]).read_text())
    return {
        "wall_s": round(wall, 1),
        "stages_s": manifest["timings_s"],
        "input_rows": manifest["input_rows"],
        "customers": manifest["customers"],
        "recommend": manifest.get("recommend"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="10M")
    parser.add_argument("--data", type=Path, help="an existing generator output (skips generating)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "recommend_10m.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-recommend-"))
    data = args.data or work / "data"
    if args.data is None:
        generate(args.lines, data)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for i in range(args.runs):
        for mode in ("off", "on"):
            result = run_job(data, work / f"{mode}{i}", recommend=mode == "on")
            runs[mode].append(result)
            print(f"{mode} run {i + 1}: {result['wall_s']} s", flush=True)
    off = statistics.median(r["wall_s"] for r in runs["off"])
    on = statistics.median(r["wall_s"] for r in runs["on"])
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "data": str(data),
        "median_wall_s": {"recommend_off": off, "recommend_on": on},
        "added_share": round(on / off - 1, 3),
        "target_added_share": 0.5,
        "runs": runs,
    }
    args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"recommend off {off} s, on {on} s: +{100 * (on / off - 1):.0f}% (target at most +50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
