"""End-to-end benchmark: the full job in local mode against the notebooks' pandas + scikit-learn baseline, on the
same generated data, for each size.

    python scripts/benchmark.py --sizes 1M,10M
    python scripts/benchmark.py --sizes 10M --description-words catalog,0
    python scripts/benchmark.py --sizes 1M,10M,50M,100M --data-dir /data/bench --out benchmarks

Per size and string width (--description-words: `catalog`, the generator's default Online Retail names of about
28 characters, or a number of words, 0 for the product number alone): generate the data once
(jobs/generate_transactions.py, seed 42, 40 lines per customer; kept under --data-dir and reused), then run,
each as its own process and one after the other:

- the job (`python -m jobs.segment_customers --input DATA --output ...`, JVM start-up included, driver heap
  -Xmx from --driver-memory, GC log on to read the heap actually used); its fixed costs (the Spark session's
  start, the catalog, the session's stop, from its log) are recorded apart from its stages;
- the baseline (scripts/baseline_pandas.py), under an address-space limit (--baseline-memory-limit) so that
  running out of memory is a recorded result ("memory") and not the machine's OOM killer;
- DuckDB + scikit-learn (scripts/baseline_duckdb.py: the same cleaning and features in SQL, the same sweep),
  under the same limit.

Recorded: wall time, time per stage (the job's manifest, the baseline's timings), peak RSS of the driver process
and of the whole process tree (psutil, sampled every 0.2 s), the driver JVM's peak heap use (GC log), rows/s,
job / baseline, the load average before and after, and the adjusted Rand index of the planted customer types
against a KMeans fit at the true k (the job's prepare + fit code on the job's published customer features).
Results merge into --out/benchmark.json (keyed by size and width, e.g. `10M` and `10M/words=0`, so they can be
run on different days) and
--out/benchmark.md (the table for docs/benchmarks.md). Needs the `bench` extra (scikit-learn, psutil).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import json
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.generate_transactions import CUSTOMER_TYPES, parse_size  # noqa: E402
from segmentation.model.metrics import adjusted_rand_index  # noqa: E402

PYTHON = sys.executable
GC_LINE = re.compile(r"(\d+)M->(\d+)M\((\d+)M\)")


def label(n: int) -> str:
    """1000000 -> '1M', 250000 -> '250k'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    import pyspark

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": java[0] if java else "unknown",
        "pyspark": pyspark.__version__,
    }


class TreeMonitor:
    """Samples the RSS of a process, of its children and of the whole tree until stopped; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_root = self.peak_tree = self.peak_java = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = {}
                for p in procs:
                    try:
                        rss[p] = p.memory_info().rss
                    except psutil.Error:
                        continue
                self.peak_tree = max(self.peak_tree, sum(rss.values()))
                self.peak_root = max(self.peak_root, rss.get(self.root, 0))
                java = [v for p, v in rss.items() if p is not self.root and _is_java(p)]
                if java:
                    self.peak_java = max(self.peak_java, max(java))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _is_java(p: psutil.Process) -> bool:
    try:
        return p.name() == "java"
    except psutil.Error:
        return False


def run_monitored(cmd: list[str], log_path: Path, env=None, preexec_fn=None) -> dict:
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)
        with TreeMonitor(proc.pid) as mon:
            rc = proc.wait()
    wall = time.perf_counter() - started
    return {
        "returncode": rc,
        "wall_s": round(wall, 2),
        "peak_rss_driver_mb": round(mon.peak_root / 2**20),
        "peak_rss_jvm_mb": round(mon.peak_java / 2**20) if mon.peak_java else None,
        "peak_rss_tree_mb": round(mon.peak_tree / 2**20),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def variant(lines: int, words: str) -> str:
    """The results' key: '10M' (the catalog's names) or '10M/words=0'."""
    return label(lines) if words == "catalog" else f"{label(lines)}/words={words}"


def folder(name: str) -> str:
    """A results key's folder name (data and work): 'lines_10M', 'lines_10M_words=0'."""
    return f"lines_{name.replace('/', '_')}"


def generate(lines: int, data_dir: Path, words: str = "catalog") -> dict:
    target = data_dir / folder(variant(lines, words))
    summary = target / "generator.json"
    if not summary.is_file():
        started = time.perf_counter()
        width = [] if words == "catalog" else ["--description-words", words]
        subprocess.run(
            [
                PYTHON,
                str(REPO / "jobs" / "generate_transactions.py"),
                "--lines",
                str(lines),
                "--out",
                str(target),
                *width,
            ],
            check=True,
            env={**os.environ, "SPARK_MASTER": os.environ.get("SPARK_MASTER", "local[2]")},
        )
        print(f"  generated {lines:,} lines in {time.perf_counter() - started:.1f} s -> {target}")
    return {"path": str(target), **json.loads(summary.read_text())}


def run_job(data: Path, out: Path, driver_memory: str, master: str | None = None) -> dict:
    gc_log = out / "driver-gc.log"
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_MASTER": master or os.environ.get("SPARK_MASTER", "local[2]"),
        "PYSPARK_SUBMIT_ARGS": f"--driver-memory {driver_memory} --driver-java-options -Xlog:gc:file={gc_log} "
        "pyspark-shell",
    }
    result = run_monitored(
        [
            PYTHON,
            "-m",
            "jobs.segment_customers",
            "--input",
            str(data / "transactions"),
            "--output",
            str(out / "job"),
        ],
        out / "job.log",
        env=env,
    )
    manifests = glob.glob(str(out / "job" / "manifests" / "snapshot_date=*" / "manifest.json"))
    if result["returncode"] == 0 and manifests:
        manifest = json.loads(Path(manifests[0]).read_text())
        result.update(
            {
                "status": "ok",
                "input_rows": manifest["input_rows"],
                "clustered_customers": manifest["clustered_customers"],
                "chosen_k": manifest["chosen_k"],
                "stages_s": manifest["timings_s"],
            }
        )
    else:
        result["status"] = "failed"
    result["fixed_s"] = fixed_costs((out / "job.log").read_text(errors="replace"), result)
    peaks = [int(m.group(1)) for m in GC_LINE.finditer(gc_log.read_text())] if gc_log.is_file() else []
    heap_max = [int(m.group(3)) for m in GC_LINE.finditer(gc_log.read_text())] if gc_log.is_file() else []
    result["driver_heap_peak_used_mb"] = max(peaks) if peaks else None
    result["driver_heap_committed_max_mb"] = max(heap_max) if heap_max else None
    result["driver_heap_limit"] = driver_memory
    return result


SESSION_LINE = re.compile(r"spark session: (started|stopped) in ([\d.]+) s")
CATALOG_LINE = re.compile(r"stage catalog: done in ([\d.]+) s")


def fixed_costs(log_text: str, result: dict) -> dict:
    """The job's costs that do not grow with the data, from its log: the Spark session's start (the JVM's with
    it), the catalog's registration, the session's stop, and the rest outside the stages (Python start and
    imports, config, the summary): wall - session - stages - stop."""
    seen = {kind: float(value) for kind, value in SESSION_LINE.findall(log_text)}
    catalog = CATALOG_LINE.findall(log_text)
    fixed = {
        "session_start": seen.get("started"),
        "catalog": float(catalog[-1]) if catalog else 0.0,
        "session_stop": seen.get("stopped"),
    }
    stages = result.get("stages_s", {}).get("total")
    if stages is not None and None not in fixed.values():
        fixed["other"] = round(
            result["wall_s"] - stages - fixed["session_start"] - fixed["catalog"] - fixed["session_stop"], 2
        )
    return fixed


def _limit_memory(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


#: The single-process contenders: the results' key -> their script.
CONTENDERS = {"baseline": "baseline_pandas.py", "duckdb": "baseline_duckdb.py"}


def run_baseline(data: Path, out: Path, memory_limit: int, name: str = "baseline") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    result = run_monitored(
        [
            PYTHON,
            str(REPO / "scripts" / CONTENDERS[name]),
            "--input",
            str(data / "transactions"),
            "--output",
            str(out / name),
        ],
        out / f"{name}.log",
        preexec_fn=_limit_memory(memory_limit),
    )
    timings = out / name / "timings.json"
    log_text = (out / f"{name}.log").read_text(errors="replace")
    if result["returncode"] == 0 and timings.is_file():
        summary = json.loads(timings.read_text())
        result.update(
            {
                "status": "ok",
                "chosen_k": summary["chosen_k"],
                "customers": summary["customers"],
                "stages_s": summary["timings_s"],
            }
        )
    elif (
        "MemoryError" in log_text
        or "std::bad_alloc" in log_text
        or "Unable to allocate" in log_text
        or (result["returncode"] in (-9, 137))
    ):
        result["status"] = "memory"
    else:
        result["status"] = "failed"
        result["error"] = log_text.strip().splitlines()[-1][:300] if log_text.strip() else ""
    result["memory_limit_gb"] = round(memory_limit / 2**30, 1)
    return result


def planted_ari(entries: dict[str, dict]) -> None:
    """ARI of the planted types against a KMeans fit at the true k, for every size run now (one Spark session)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from segmentation.config import DEFAULTS
    from segmentation.model.kmeans import fit_kmeans
    from segmentation.prepare import fit_preparation

    os.environ.setdefault("SPARK_CONF_DIR", str(REPO / "conf"))
    spark = SparkSession.builder.master("local[2]").appName("benchmark-ari").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for entry in entries.values():
            if entry.get("job", {}).get("status") != "ok":
                continue
            seg = spark.read.parquet(glob.glob(f"{entry['work']}/job/segments/snapshot_date=*")[0])
            labels = spark.read.parquet(f"{entry['data']['path']}/labels")
            customers = seg.filter(F.col("excluded_reason").isNull()).join(labels, "customer_id").cache()
            k = len(CUSTOMER_TYPES)
            prep, _ = fit_preparation(customers, DEFAULTS["prepare"])
            scaled = prep.transform(customers)
            model = fit_kmeans(scaled, k, int(DEFAULTS["model"]["seed"]))
            entry["ari_true_k"] = round(
                adjusted_rand_index(model.transform(scaled), "customer_type", "cluster"), 4
            )
            if entry["job"]["chosen_k"] == k:
                entry["ari_published"] = round(
                    adjusted_rand_index(customers, "customer_type", "segment_id"), 4
                )
            customers.unpersist()
    finally:
        spark.stop()


#: The job's stages shown in the per-stage table (the rest are summed in "other stages").
STAGES = ("read", "validate", "features", "prepare", "model", "profile", "recommend", "report", "write")


def _wall(entry: dict) -> float | None:
    return entry.get("wall_s") if entry.get("status") == "ok" else None


def _ratio(job: dict, other: dict) -> str:
    return f"{_wall(job) / _wall(other):.2f}" if _wall(job) and _wall(other) else "-"


def _scaling(entry: dict) -> str:
    run = entry.get("scaling")
    return f"{run['master']}: {run['wall_s']} ({run['speedup']}x)" if run else "-"


def _width(entry: dict) -> str:
    words = entry["data"]["params"].get("description_words")
    return "catalog names" if words is None else f"{words} words"


def _shown(entry: dict) -> str:
    return str(entry["wall_s"]) if entry.get("status") == "ok" else entry.get("status", "not run")


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Machine of the latest run (each row names its own): {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB RAM, {m['os']}, {m['java']}, PySpark {m['pyspark']}, Python {m['python']}.",
        "",
        "| lines | descriptions | customers | job s | pandas s | DuckDB s | job / pandas | job / DuckDB | job rows/s "
        "| job peak RSS tree MB | driver heap peak MB (limit) | pandas peak RSS MB | ARI at true k "
        "| job on fewer cores s (speed-up) | load avg (1 min) job / pandas | run at (UTC) | machine, PySpark |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- "
        "| --- |",
    ]
    ordered = sorted(results["sizes"].items(), key=lambda kv: (kv[1]["lines"], kv[0]))
    for _, e in ordered:
        job, base, duck = e.get("job", {}), e.get("baseline", {}), e.get("duckdb", {})
        lines.append(
            f"| {label(e['lines'])} | {_width(e)} "
            f"| {e['data']['params']['customers']:,} | {job.get('wall_s', '-')} | {_shown(base)} | {_shown(duck)} "
            f"| {_ratio(job, base)} | {_ratio(job, duck)} | {e['lines'] / job['wall_s']:,.0f} | {job.get('peak_rss_tree_mb', '-')} "
            f"| {job.get('driver_heap_peak_used_mb', '-')} ({job.get('driver_heap_limit', '-')}) "
            f"| {base.get('peak_rss_tree_mb', '-')} | {e.get('ari_true_k', '-')} | {_scaling(e)} "
            f"| {job.get('load_before', ['-'])[0]} / {base.get('load_before', ['-'])[0]} | {e['run_at']} "
            f"| {e.get('machine', {}).get('cpu', '-')}, {e.get('machine', {}).get('pyspark', '-')} |"
        )
    lines += [
        "",
        "The job's seconds per stage, and its fixed costs (Spark session start with the JVM, catalog, session "
        "stop, the rest outside the stages):",
        "",
        "| lines | descriptions | "
        + " | ".join(STAGES)
        + " | other stages | session start | catalog | session stop "
        "| other | wall |",
        "| ---: | --- |" + " ---: |" * (len(STAGES) + 6),
    ]
    for _, e in ordered:
        job = e.get("job", {})
        stages = job.get("stages_s", {})
        if not stages:
            continue
        fixed = job.get("fixed_s", {})
        shown = [stages.get(st, "-") for st in STAGES]
        # `total` sums the top-level stages (recommend's steps are inside `recommend`)
        other = stages.get("total", 0) - sum(v for st, v in stages.items() if st in STAGES)
        lines.append(
            f"| {label(e['lines'])} | {_width(e)} | "
            + " | ".join(str(v) for v in shown)
            + f" | {other:.1f} | {fixed.get('session_start', '-')} | {fixed.get('catalog', '-')} "
            f"| {fixed.get('session_stop', '-')} | {fixed.get('other', '-')} | {job['wall_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,10M", help="comma-separated line counts: 1M,10M,50M,100M")
    parser.add_argument(
        "--description-words",
        default="catalog",
        help="comma-separated description widths per size: catalog (the generator's names), or a word count "
        "(0: the product number alone)",
    )
    parser.add_argument("--data-dir", default="bench-data", help="generated data (reused between runs)")
    parser.add_argument("--work-dir", default="bench-work", help="job and baseline outputs and logs")
    parser.add_argument("--out", default="benchmarks", help="benchmark.json and benchmark.md go here")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument(
        "--baseline-memory-limit",
        type=parse_size,
        default=20 * 2**30,
        help="bytes, e.g. 20G (both contenders)",
    )
    parser.add_argument(
        "--contenders",
        default="baseline,duckdb",
        help="comma-separated single-process contenders run beside the job: baseline (pandas), duckdb",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="the job alone")
    parser.add_argument(
        "--scaling-master",
        help="also run the job with this master (e.g. local[1]) on the first width of each size: the speed-up of "
        "SPARK_MASTER (local[2]) over it is recorded (`scaling`)",
    )
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    widths = [w.strip() for w in args.description_words.split(",")]
    for w in widths:
        if w != "catalog" and not w.isdigit():
            parser.error(f"--description-words: expected catalog or a word count, got {w!r}")
    contenders = [] if args.skip_baseline else [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"--contenders: unknown {sorted(unknown)}; known: {sorted(CONTENDERS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "benchmark.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"sizes": {}}
    results["machine"] = machine()
    now: dict[str, dict] = {}
    for lines in sizes:
        for words in widths:
            name = variant(lines, words)
            print(f"{name} lines:")
            data = generate(lines, Path(args.data_dir), words)
            work = Path(args.work_dir) / folder(name)
            entry = {
                "lines": lines,
                "machine": results["machine"],
                "data": data,
                "work": str(work),
                "run_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            }
            entry["job"] = run_job(Path(data["path"]), work, args.driver_memory)
            print(
                f"  job: {entry['job']['status']} in {entry['job']['wall_s']} s "
                f"(load {entry['job']['load_before']}; fixed {entry['job']['fixed_s']})"
            )
            if args.scaling_master and words == widths[0]:
                fewer = run_job(Path(data["path"]), work / "scaling", args.driver_memory, args.scaling_master)
                entry["scaling"] = {
                    "master": args.scaling_master,
                    "wall_s": fewer["wall_s"],
                    "stages_s": fewer.get("stages_s"),
                    "speedup": round(fewer["wall_s"] / entry["job"]["wall_s"], 3)
                    if fewer["status"] == entry["job"]["status"] == "ok"
                    else None,
                }
                print(f"  job with {args.scaling_master}: {fewer['status']} in {fewer['wall_s']} s")
            for contender in contenders:
                entry[contender] = run_baseline(
                    Path(data["path"]), work, args.baseline_memory_limit, contender
                )
                print(f"  {contender}: {entry[contender]['status']} in {entry[contender]['wall_s']} s")
                if entry[contender]["status"] == "ok" and entry["job"]["status"] == "ok":
                    key = "job_over_baseline" if contender == "baseline" else f"job_over_{contender}"
                    entry[key] = round(entry["job"]["wall_s"] / entry[contender]["wall_s"], 3)
            now[name] = entry
    planted_ari(now)
    for name, entry in now.items():
        print(f"{name}: ARI at true k {entry.get('ari_true_k')}")
        results["sizes"][name] = entry
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "benchmark.md").write_text(markdown(results), encoding="utf-8")
    print((out / "benchmark.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
