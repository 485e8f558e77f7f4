"""Small, deterministic transaction logs in the Online Retail layout, for end-to-end runs of the job.

Groups of customers are far apart in (recency, frequency, monetary), so KMeans with a fixed k finds them
whatever the seed; `shift_days` moves the whole log in time (the same customers, a later snapshot).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
#: The day after the last purchase of the unshifted log: the default snapshot date.
END = dt.date(2011, 6, 30)

#: name -> (customers, days before END of the last order, orders, value per order); id prefix
GROUPS: dict[str, tuple[int, int, int, float]] = {
    "best": (8, 2, 24, 400.0),
    "regular": (10, 40, 6, 60.0),
    "lapsed": (12, 250, 1, 15.0),
}
WHALES = {"whales": (6, 120, 3, 20000.0)}


def transactions(groups: dict[str, tuple[int, int, int, float]] = GROUPS, shift_days: int = 0) -> list[tuple]:
    """(invoice, customer, timestamp, quantity, unit price) rows: orders 5 days apart, ending `recency` days
    before END; small per-customer variations keep the customers distinct but the groups apart."""
    rows = []
    invoice = 100000
    for g, (n, recency, orders, value) in enumerate(groups.values()):
        for i in range(n):
            customer = f"{(g + 1) * 1000 + i}"
            last = END - dt.timedelta(days=recency + i % 3 - shift_days + 1)
            for o in range(orders):
                day = last - dt.timedelta(days=5 * o)
                invoice += 1
                price = round(value * (1 + 0.02 * (i % 5)) / 2, 2)
                ts = f"{day.isoformat()} {10 + o % 8:02d}:{i % 60:02d}:00"
                rows.append((str(invoice), customer, ts, 2, price))
    return rows


def write_csv(path: Path, rows: list[tuple], extra_lines: str = "") -> Path:
    """Write rows as an Online Retail CSV (+ raw extra lines, e.g. rejects)."""
    # each group buys from its own four products (customer ids are (group + 1) * 1000 + i): segment products
    # with a clear lift; one line per order, so no basket rules
    lines = [
        f"{inv},P{int(c) // 1000}{int(inv) % 4},Item {int(c) // 1000}-{int(inv) % 4},{q},{ts},{p},{c}.0,United Kingdom\n"
        for inv, c, ts, q, p in rows
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(lines) + extra_lines, encoding="utf-8")
    return path


#: A line without a customer id and a malformed line: every run has rejects.
REJECT_LINES = "999999,X,ITEM,1,2011-01-05 10:00:00,1.0,,United Kingdom\n1,2,3\n"


def write_two_snapshots(folder: Path) -> tuple[Path, Path]:
    """`in1/log.csv`: the groups; `in2/log.csv`: the same customers 30 days later plus big spenders (k=4). Both
    with the reject lines."""
    first = write_csv(folder / "in1" / "log.csv", transactions(), REJECT_LINES)
    second = write_csv(
        folder / "in2" / "log.csv", transactions({**GROUPS, **WHALES}, shift_days=30), REJECT_LINES
    )
    return first, second


def job_config(
    input_path: Path | str, output: Path | str, recommend: bool = False, **overrides: Any
) -> dict[str, Any]:
    """A validated config for a CSV log with k fixed at the number of groups (3 unless overridden), without the
    HTML report (`output.report`; the report has its own tests, and rendering it costs seconds per run) and
    without the recommend stage unless asked for (tests/test_recommend.py and the contract's runs have it)."""
    from segmentation.config import apply_overrides, load_config, validate_config

    cfg = load_config(None)
    cfg["input"]["format"] = "csv"
    cfg["prepare"]["cap_quantiles"] = None
    cfg["model"]["partitions"] = 1
    cfg["model"]["parallelism"] = 1
    cfg["model"]["stability_fits"] = 0  # the choice of k is tested on its own
    cfg["output"]["report"] = False
    cfg["recommend"]["enabled"] = None if recommend else False
    overrides = {"k": 3, **overrides}
    return validate_config(apply_overrides(cfg, input=str(input_path), output=str(output), **overrides))


def write_config(
    path: Path, catalog: str = "enabled: false", report: bool = False, recommend: bool = False, **model: Any
) -> Path:
    """The YAML equivalent of `job_config` for the console script (input and output given as options), without
    stability fits, and with the catalog off unless asked for (conftest.console_snapshots has it on): these runs
    check publishing and outputs; the choice of k is tested on its own (test_diagnostics, test_lloyd). No HTML
    report and no recommend stage unless asked for (as `job_config`)."""
    model = {"partitions": 1, "parallelism": 1, "stability_fits": 0, **model}
    body = "".join(f"  {k}: {v}\n" for k, v in model.items())
    path.write_text(
        f"input:\n  format: csv\nprepare:\n  cap_quantiles: null\nmodel:\n{body}catalog:\n  {catalog}\n"
        f"output:\n  report: {str(report).lower()}\nrecommend:\n  enabled: {'null' if recommend else 'false'}\n",
        encoding="utf-8",
    )
    return path


def scaled_points(spark, rows: list[tuple], schema: str = "customer_id string, a double, b double"):
    """Customers with features `a` and `b` -> the standardised `scaled` vector, laid out (two partitions, sorted
    by id) as the job lays out the customers it clusters; cached."""
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    df = spark.createDataFrame(rows, schema).repartition(2, "customer_id").sortWithinPartitions("customer_id")
    assembled = VectorAssembler(inputCols=["a", "b"], outputCol="features").transform(df)
    scaler = StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True)
    return scaler.fit(assembled).transform(assembled).cache()
