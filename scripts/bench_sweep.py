"""Benchmark of the k sweep alone: the naive loop (a full Spark ML KMeans fit and a ClusteringEvaluator
silhouette per k, one after the other) against the job's sweep (`sweep_k`: Spark ML's k-means|| starts replayed
for all k in shared passes, then the Lloyd iterations of all k together and every k's silhouette and diagnostics
from shared passes; optionally on a seeded sample, `--sample` = `model.sweep_sample`), plus the Spark ML model of
the chosen k that the job publishes, on generated customers. `--stability-fits` adds the job's stability seeds
(default 0: the issue's sweep, one fit per k; the job's default config has 2).

    python scripts/bench_sweep.py                       # 250k customers, k = 2..10, all customers
    python scripts/bench_sweep.py --sample 50000 --json /tmp/sweep.json

The customers are the generator's (jobs/generate_transactions.py, same seed = same customers) with their planted
features taken directly (recency, orders, lines x basket value) instead of being aggregated from lines, so the
benchmark measures the sweep and nothing else. Both sweeps run on the same cached, scaled features in one Spark
session (local[2] unless SPARK_MASTER is set); ours runs first, so JVM warm-up counts against it. Prints and
writes the wall times and, per k, the cost per customer of the sampled fit next to the full fit's (the elbow
must stay within 5%; without a sample the two are the same fits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pyspark.ml.clustering import KMeans  # noqa: E402
from pyspark.ml.evaluation import ClusteringEvaluator  # noqa: E402

from jobs.generate_transactions import parse_size, planted_features  # noqa: E402
from segmentation.config import DEFAULTS  # noqa: E402
from segmentation.model.fit import Fit as Fit  # noqa: E402
from segmentation.model.kmeans import fit_on_all, sweep_k  # noqa: E402
from segmentation.model.knee import knee_point  # noqa: E402
from segmentation.prepare import fit_preparation  # noqa: E402


def naive_sweep(scaled_df, ks: list[int], seed: int, max_iter: int, tol: float) -> list[Fit]:
    """The straightforward loop: one Spark ML KMeans fit per k on the cached features, then its silhouette."""
    fits = []
    for k in ks:
        kmeans = KMeans(
            featuresCol="scaled", predictionCol="cluster", k=k, seed=seed, maxIter=max_iter, tol=tol
        )
        model = kmeans.fit(scaled_df)
        score = ClusteringEvaluator(featuresCol="scaled", predictionCol="cluster").evaluate(
            model.transform(scaled_df)
        )
        fits.append(Fit(k, model.summary.trainingCost, score, list(model.summary.clusterSizes), model))
    return fits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=parse_size, default=250_000)
    parser.add_argument(
        "--sample",
        type=parse_size,
        default=DEFAULTS["model"]["sweep_sample"],
        help="model.sweep_sample (default: off)",
    )
    parser.add_argument("--k-min", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--stability-fits", type=int, default=0, help="extra seeds per k (model.stability_fits)"
    )
    parser.add_argument("--skip-naive", action="store_true", help="time only our sweep")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    from jobs.spark_session import build_spark, configure_logging

    os.environ.setdefault("SPARK_MASTER", "local[2]")
    configure_logging(False)
    spark = build_spark("bench-sweep")
    ks = list(range(args.k_min, args.k_max + 1))
    model_cfg = DEFAULTS["model"]
    customers_df = (
        planted_features(spark, args.customers, args.seed)
        .repartition(int(model_cfg["partitions"]), "customer_id")
        .sortWithinPartitions("customer_id")
        .persist()
    )
    n = customers_df.count()
    prep, _ = fit_preparation(customers_df, DEFAULTS["prepare"])
    scaled = prep.transform(customers_df).persist()
    scaled.count()
    common = {"seed": args.seed, "max_iter": model_cfg["max_iter"], "tol": model_cfg["tol"]}
    load_before = os.getloadavg()

    started = time.perf_counter()
    ours = sweep_k(scaled, ks, sample_size=args.sample or None, stability_fits=args.stability_fits, **common)
    chosen_k = knee_point(ks, [f.wcss for f in ours])[0] or ks[0]
    final = fit_on_all(scaled, next(f for f in ours if f.k == chosen_k), **common)
    ours_s = time.perf_counter() - started
    result = {
        "customers": n,
        "ks": ks,
        "sample": args.sample,
        "stability_fits": args.stability_fits,
        "ours_s": round(ours_s, 2),
        "ours_chosen_k": chosen_k,
        "ours_final_wcss_per_customer": final.wcss / n,
        "ours_wcss_per_customer": {f.k: f.wcss / n for f in ours},
    }
    if not args.skip_naive:
        started = time.perf_counter()
        naive = naive_sweep(scaled, ks, **common)
        naive_s = time.perf_counter() - started
        result.update(
            {
                "naive_s": round(naive_s, 2),
                "speed_up": round(naive_s / ours_s, 2),
                "naive_chosen_k": knee_point(ks, [f.wcss for f in naive])[0] or ks[0],
                "naive_wcss_per_customer": {f.k: f.wcss / n for f in naive},
                "relative_difference": {f.k: abs(o.wcss - f.wcss) / f.wcss for o, f in zip(ours, naive)},
            }
        )
        result["max_relative_difference"] = max(result["relative_difference"].values())
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    spark.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"k sweep k={ks[0]}..{ks[-1]} on {n:,} customers (load {result['load_average_before']})")
    sample = f"sample {args.sample:,}" if args.sample else "all customers"
    print(f"  ours : {ours_s:6.1f} s ({sample}, {args.stability_fits} stability fits; knee k={chosen_k})")
    if not args.skip_naive:
        print(f"  naive: {result['naive_s']:6.1f} s (full fits, one at a time) -> {result['speed_up']}x")
        print("  k  cost/customer ours  full   diff")
        for k in ks:
            o, f = result["ours_wcss_per_customer"][k], result["naive_wcss_per_customer"][k]
            print(f"  {k:2d}  {o:10.4f}  {f:10.4f}  {abs(o - f) / f:6.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
