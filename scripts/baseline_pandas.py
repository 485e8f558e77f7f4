"""The notebooks' pipeline, as the benchmark's baseline: pandas read -> clean -> groupby RFM -> log1p + clip ->
StandardScaler -> scikit-learn KMeans for k = 2..10 -> knee -> write. Single process, no Spark.

    python scripts/baseline_pandas.py --input /tmp/gen1m/transactions --output /tmp/baseline1m

Same cleaning rules as the job where they matter for the result (missing customer, unparsable numbers and dates,
price <= 0, exact duplicates, returns netted, customers with monetary <= 0 left out), same features, same k range,
same knee rule. Writes `segments.parquet` and `timings.json` (seconds per stage) to --output. Uses the
project's own dependencies (pandas, scikit-learn); `Laps`, `parse_args` and `sweep_and_write` serve the DuckDB
contender too (scripts/baseline_duckdb.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from segmentation.model.knee import knee_point  # noqa: E402  (pure Python, no Spark)

COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]


class Laps:
    """Seconds per named step since the previous one (`timings`; `finish` adds the `total`)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.started = self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 3)
        self.last = now

    def finish(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.started, 3)
        return self.timings


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, help="Parquet folder or file")
    parser.add_argument("--output", required=True)
    parser.add_argument("--k-min", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def sweep_and_write(rfm: pd.DataFrame, input_rows: int, args: argparse.Namespace, lap: Laps) -> dict:
    """The notebooks' model on the customers' features (`rfm`: one row per customer, indexed by its id, with
    recency_days, frequency, monetary): log1p + clip -> StandardScaler -> KMeans for each k -> knee, then
    segments.parquet and timings.json in --output. Returns the summary (also printed)."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    features = np.log1p(rfm[["recency_days", "frequency", "monetary"]].to_numpy(dtype=float))
    features = np.clip(features, features.min(axis=0), np.quantile(features, 0.995, axis=0))
    scaled = StandardScaler().fit_transform(features)
    lap("prepare")

    ks = list(range(args.k_min, args.k_max + 1))
    models = {k: KMeans(n_clusters=k, random_state=args.seed, n_init=1).fit(scaled) for k in ks}
    inertia = [float(models[k].inertia_) for k in ks]
    chosen, _ = knee_point(ks, inertia)
    chosen = chosen or ks[0]
    lap("model")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    segments = rfm[["recency_days", "frequency", "monetary"]].assign(cluster=models[chosen].labels_)
    segments.reset_index().to_parquet(out / "segments.parquet", index=False)
    lap("write")
    summary = {
        "input_rows": input_rows,
        "customers": len(rfm),
        "chosen_k": chosen,
        "wcss": dict(zip(ks, inertia)),
        "timings_s": lap.finish(),
    }
    (out / "timings.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0])
    lap = Laps()
    df = pd.read_parquet(args.input, columns=COLUMNS)
    input_rows = len(df)
    lap("read")

    df = df[df["CustomerID"].notna() & (df["CustomerID"].str.strip() != "")]
    df = df.drop_duplicates()
    df["Quantity"] = pd.to_numeric(df["Quantity"], errors="coerce")
    df["UnitPrice"] = pd.to_numeric(df["UnitPrice"], errors="coerce")
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    df = df.dropna(subset=["Quantity", "UnitPrice", "InvoiceDate"])
    df = df[(df["Quantity"] != 0) & (df["UnitPrice"] > 0)]
    df["CustomerID"] = df["CustomerID"].str.strip().str.replace(r"\.0+$", "", regex=True)
    lap("clean")

    df["value"] = df["Quantity"] * df["UnitPrice"]
    is_return = df["InvoiceNo"].str.startswith("C") | (df["Quantity"] < 0)
    snapshot = df["InvoiceDate"].max().normalize() + pd.Timedelta(days=1)
    purchases = df[~is_return]
    rfm = purchases.groupby("CustomerID").agg(
        last=("InvoiceDate", "max"), frequency=("InvoiceNo", "nunique"), gross=("value", "sum")
    )
    returns = df[is_return].groupby("CustomerID")["value"].sum().abs()
    rfm["monetary"] = rfm["gross"] - returns.reindex(rfm.index, fill_value=0.0)
    rfm["recency_days"] = (snapshot - rfm["last"].dt.normalize()).dt.days
    rfm = rfm[rfm["monetary"] > 0]
    lap("features")

    sweep_and_write(rfm, input_rows, args, lap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
