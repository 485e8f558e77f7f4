"""Synthetic transactions in the Online Retail layout, any size, deterministic (Spark only, no Python row loops).

    python jobs/generate_transactions.py --lines 10M --out /tmp/gen10m
    python jobs/generate_transactions.py --lines 1M --customers 25000 --seed 7 --format both --out /tmp/gen1m
    spark-submit jobs/generate_transactions.py --lines 100M --out /data/gen100m

Writes under --out:

- `transactions/`: Parquet part files (and `transactions_csv/` with a header row when `--format csv|both`), the
  eight Online Retail columns as strings (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
  CustomerID, Country), readable by the job's default config: `segment-customers --input OUT/transactions`.
- `labels/`: Parquet, one row per customer: `customer_id` (as the job normalises it: "10042"), `customer_type`,
  `type_id`: the planted type the customer's activity was drawn from.
- `generator.json`: the parameters and the realised counts (lines, customers per type, defects).

Every value is a function of (seed, customer, line index) through `xxhash64`, so the same arguments give the same
files on any machine and any partitioning. Customers get a planted type (recency, orders, lines per order and
basket size differ by type), a log-normal number of orders and lines (heavy-tailed activity: a small share of
customers has most of the lines), and exactly `--lines` lines in total. Products have planted preferences: a
type buys mostly from its own pool of products, each customer from a window of it (`product_pools()`, recorded
in generator.json), so segment products, basket rules and recommendations have a known answer. Defects are drawn per line: returns
("C" invoice, negative quantity), lines without customer, exact duplicates of the previous line, malformed values
(a quantity "12x", a price "n/a" or a date in another format).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


@dataclass(frozen=True)
class CustomerType:
    """One planted customer type: the generator draws each customer's activity from its type."""

    name: str
    share: float  # of customers
    recency_days: tuple[int, int]  # days from the last order to the end date, uniform
    orders: float  # median number of orders (log-normal)
    orders_sigma: float
    lines_per_order: float  # median lines per order (log-normal, sigma 0.3)
    quantity: int  # typical quantity per line
    span_days: int  # days from the first to the last order (for customers with 2+ orders)


#: Well separated in (log recency, log frequency, log monetary), so KMeans at k=4 can recover them.
CUSTOMER_TYPES = (
    CustomerType("champion", 0.10, (0, 14), 25.0, 0.35, 10.0, 12, 540),
    CustomerType("regular", 0.30, (25, 75), 6.0, 0.30, 7.0, 8, 360),
    CustomerType("lapsed", 0.25, (180, 300), 3.0, 0.25, 5.0, 10, 240),
    CustomerType("one_off", 0.35, (420, 700), 1.0, 0.0, 3.0, 4, 0),
)

PRODUCTS = (
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "REGENCY CAKESTAND 3 TIER",
    "JUMBO BAG RED RETROSPOT",
    "PARTY BUNTING",
    "LUNCH BAG RED RETROSPOT",
    "ASSORTED COLOUR BIRD ORNAMENT",
    "SET OF 3 CAKE TINS PANTRY DESIGN",
    "PACK OF 72 RETROSPOT CAKE CASES",
    "LUNCH BAG BLACK SKULL",
    "NATURAL SLATE HEART CHALKBOARD",
    "HEART OF WICKER SMALL",
    "JAM MAKING SET WITH JARS",
    "SPOTTY BUNTING",
    "PAPER CHAIN KIT 50'S CHRISTMAS",
    "HAND WARMER OWL DESIGN",
    "RECYCLING BAG RETROSPOT",
)
#: The words of the names above: `--description-words N` builds every product's description from N of them.
WORDS = tuple(sorted({w for name in PRODUCTS for w in name.split()}))

COUNTRIES = ("United Kingdom",) * 18 + ("Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium")

MAX_ORDERS = 4095  # invoice numbers are customer * 4096 + order
CUSTOMER_ID_OFFSET = 10000
_UNIT = float(1 << 53)


@dataclass(frozen=True)
class GeneratorParams:
    lines: int
    customers: int
    seed: int = 42
    returns: float = 0.02
    missing_customer: float = 0.05
    duplicates: float = 0.01
    malformed: float = 0.002
    end_date: str = "2011-12-09"
    #: None: the descriptions are Online Retail's names (4-5 words, about 28 characters) and the product number;
    #: N: N words drawn per product from their words, then the number (0: the number alone)
    description_words: int | None = None
    partitions: int | None = None

    def check(self) -> None:
        if self.customers < 1 or self.lines < self.customers:
            raise ValueError(
                f"need 1 <= customers <= lines, got {self.customers} customers, {self.lines} lines"
            )
        shares = (self.returns, self.missing_customer, self.duplicates, self.malformed)
        if any(s < 0 for s in shares) or self.returns + self.missing_customer + self.malformed > 1:
            raise ValueError("defect shares must be >= 0 and returns + missing + malformed <= 1")
        if self.duplicates > 0.5:
            raise ValueError("duplicates must be <= 0.5 (a duplicate copies the previous line)")
        if self.description_words is not None and not 0 <= self.description_words <= 100:
            raise ValueError(f"description words must be 0..100, got {self.description_words}")


def parse_size(text: str) -> int:
    """'1M' -> 1_000_000, '250k' -> 250_000, '100000' -> 100000."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = float(number) * scale
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a count like 250k, 10M or 100000, got {text!r}") from exc
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole count, got {text!r}")
    return int(value)


def uniform(seed: int, tag: str, *cols: Column) -> Column:
    """A pseudo-random double in [0, 1): the low 53 bits of xxhash64(seed, tag, cols)."""
    return F.xxhash64(F.lit(seed), F.lit(tag), *cols).bitwiseAND(F.lit((1 << 53) - 1)) / F.lit(_UNIT)


def description(product: Column, words: int | None) -> Column:
    """A product's description, the same on every line of the product: its catalog name (`words` None) or
    `words` words drawn by a hash of (product, position), then the product number."""
    if words is None:
        name = F.element_at(
            F.array(*[F.lit(x) for x in PRODUCTS]), (F.pmod(product, F.lit(len(PRODUCTS))) + 1).cast("int")
        )
    else:
        vocabulary = F.array(*[F.lit(w) for w in WORDS])
        drawn = [
            F.element_at(
                vocabulary, (F.pmod(F.xxhash64(product, F.lit(i)), F.lit(len(WORDS))) + 1).cast("int")
            )
            for i in range(words)
        ]
        if not drawn:
            return product.cast("string")
        name = F.concat_ws(" ", *drawn)
    return F.concat_ws(" ", name, product.cast("string"))


def normal(seed: int, tag: str, *cols: Column) -> Column:
    """A standard normal draw (Box-Muller on two hash uniforms)."""
    u1 = F.lit(1.0) - uniform(seed, tag + ":1", *cols)  # (0, 1]
    u2 = uniform(seed, tag + ":2", *cols)
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2 * math.pi) * u2)


def _by_type(values: list[Any]) -> Column:
    return F.element_at(F.array(*[F.lit(v) for v in values]), F.col("type_id") + 1)


def customers_table(spark: SparkSession, p: GeneratorParams) -> DataFrame:
    """One row per customer: planted type, recency, orders, span and an integer activity weight."""
    partitions = p.partitions or max(2, math.ceil(p.lines / 2_000_000))
    c = F.col("c")
    u_type = uniform(p.seed, "type", c)
    type_id = F.lit(len(CUSTOMER_TYPES) - 1)
    bound = 0.0
    cases = None
    for i, t in enumerate(CUSTOMER_TYPES[:-1]):
        bound += t.share
        cases = F.when(u_type < bound, i) if cases is None else cases.when(u_type < bound, i)
    type_id = cases.otherwise(type_id) if cases is not None else type_id
    types = CUSTOMER_TYPES
    df = (
        spark.range(0, p.customers, 1, partitions).withColumnRenamed("id", "c").withColumn("type_id", type_id)
    )
    rec_lo, rec_hi = (
        _by_type([t.recency_days[0] for t in types]),
        _by_type([t.recency_days[1] for t in types]),
    )
    orders = F.round(
        _by_type([t.orders for t in types])
        * F.exp(_by_type([t.orders_sigma for t in types]) * normal(p.seed, "orders", c))
    )
    lines_per_order = _by_type([t.lines_per_order for t in types]) * F.exp(
        F.lit(0.3) * normal(p.seed, "lpo", c)
    )
    return df.withColumns(
        {
            "recency": (rec_lo + F.floor(uniform(p.seed, "recency", c) * (rec_hi - rec_lo + 1))).cast("int"),
            "orders": F.least(F.greatest(orders, F.lit(1.0)), F.lit(float(MAX_ORDERS))).cast("long"),
            "span": F.floor(_by_type([t.span_days for t in types]) * (0.5 + uniform(p.seed, "span", c))).cast(
                "int"
            ),
            "quantity_scale": _by_type([t.quantity for t in types]),
        }
    ).withColumn("weight", F.greatest(F.round(F.col("orders") * lines_per_order), F.lit(1.0)).cast("long"))


def with_line_counts(customers_df: DataFrame, lines: int) -> DataFrame:
    """Add `n_lines`: 1 + a share of the other lines proportional to the weight, summing to exactly `lines`.

    Integer arithmetic throughout, so the counts do not depend on the partitioning.
    """
    n = customers_df.count()
    total_weight = customers_df.agg(F.sum("weight")).first()[0]
    spare = lines - n
    base = customers_df.withColumn(
        "n_lines", F.lit(1) + F.expr(f"CAST(weight AS DECIMAL(38, 0)) * {spare} DIV {total_weight}")
    )
    assigned = base.agg(F.sum("n_lines")).first()[0]
    remainder = lines - int(assigned)  # < number of customers: one more line each for the first ones
    return base.withColumn(
        "n_lines", (F.col("n_lines") + F.when(F.col("c") < remainder, 1).otherwise(0)).cast("long")
    )


#: Products: each customer type prefers its own pool of `POOL_SIZE` products (type i: products
#: [i * POOL_SIZE, (i + 1) * POOL_SIZE)); the rest of the catalog is shared, a few products far more popular
#: than the others. StockCode = PRODUCT_CODE_OFFSET + product.
POOL_SIZE = 200
SHARED_PRODUCTS = 1200
PRODUCT_CODE_OFFSET = 20000
#: Share of a customer's lines from their type's pool, and how many products of it a customer favours (a
#: window at a customer-specific offset: customers with overlapping windows buy alike).
PREFERRED_SHARE = 0.6
TASTE_WINDOW = 20


def product_of_line(seed: int, c: Column, e: Column, type_id: Column) -> Column:
    """The product of line e of customer c: PREFERRED_SHARE of the lines from a window of TASTE_WINDOW products
    of the type's pool, the others from the shared catalog (index = SHARED_PRODUCTS x u^2: a popular head)."""
    u = uniform(seed, "product", c, e)
    window_start = F.floor(uniform(seed, "taste", c) * POOL_SIZE)
    in_window = F.floor(uniform(seed, "pick", c, e) * TASTE_WINDOW)
    preferred = type_id * POOL_SIZE + F.pmod(window_start + in_window, F.lit(POOL_SIZE))
    shared = len(CUSTOMER_TYPES) * POOL_SIZE + F.floor(
        F.lit(float(SHARED_PRODUCTS)) * F.pow(uniform(seed, "shared", c, e), 2)
    )
    return F.when(u < PREFERRED_SHARE, preferred).otherwise(shared).cast("long")


def product_pools() -> dict[str, list[str]]:
    """Each customer type's preferred StockCodes, first and last (generator.json; tests check against them)."""
    return {
        t.name: [str(PRODUCT_CODE_OFFSET + i * POOL_SIZE), str(PRODUCT_CODE_OFFSET + (i + 1) * POOL_SIZE - 1)]
        for i, t in enumerate(CUSTOMER_TYPES)
    }


def transactions(customers_df: DataFrame, p: GeneratorParams) -> DataFrame:
    """Explode customers into their lines and draw every value from hashes of (seed, customer, line)."""
    seed = p.seed
    c, j = F.col("c"), F.col("j")
    end = dt.datetime.fromisoformat(p.end_date).replace(tzinfo=dt.timezone.utc)
    end_epoch = int(end.timestamp())
    lines_df = customers_df.withColumn(
        "j", F.explode(F.sequence(F.lit(0).cast("long"), F.col("n_lines") - 1))
    )
    # a duplicate (odd lines only, so the copied line is never a duplicate itself) repeats line j - 1 exactly
    is_dup = (j % 2 == 1) & (uniform(seed, "dup", c, j) < F.lit(2 * p.duplicates))
    lines_df = lines_df.withColumn("e", F.when(is_dup, j - 1).otherwise(j))
    e = F.col("e")
    freq = F.least(F.col("orders"), F.col("n_lines"))
    order = F.floor(e * freq / F.col("n_lines")).cast("long")
    days_before_last = F.when(
        freq > 1, F.floor(F.col("span") * (freq - 1 - F.col("o")) / (freq - 1))
    ).otherwise(F.lit(0))
    seconds = (
        F.lit(end_epoch)
        - (F.col("recency") + days_before_last) * 86400
        + (8 * 3600 + F.floor(uniform(seed, "time", c, F.col("o")) * 10 * 3600 / 60) * 60)
    )
    # the price is drawn per line as before the products had preferences, so the features stay the same
    price = F.round(
        F.lit(0.4) + F.lit(9.6) * uniform(seed, "price", F.lit(10000) + F.pmod(c * 7 + e, F.lit(90000))), 2
    )
    product = product_of_line(seed, c, e, F.col("type_id"))
    stock = F.lit(PRODUCT_CODE_OFFSET) + product
    quantity = F.ceil(F.col("quantity_scale") * (F.lit(0.2) + F.lit(1.6) * uniform(seed, "qty", c, e)))
    invoice = (c * (MAX_ORDERS + 1) + F.col("o") + F.lit(100000)).cast("string")
    u = uniform(seed, "defect", c, e)
    returns_to = p.returns
    missing_to = returns_to + p.missing_customer
    malformed_to = missing_to + p.malformed
    is_return = u < returns_to
    is_missing = (u >= returns_to) & (u < missing_to)
    is_malformed = (u >= missing_to) & (u < malformed_to)
    kind = F.floor(uniform(seed, "kind", c, e) * 3)
    timestamp = F.timestamp_seconds(seconds)
    quantity_text = F.when(is_return, -quantity).otherwise(quantity).cast("string")
    return lines_df.withColumn("o", order).select(
        F.when(is_return, F.concat(F.lit("C"), invoice)).otherwise(invoice).alias("InvoiceNo"),
        stock.cast("string").alias("StockCode"),
        description(product, p.description_words).alias("Description"),
        F.when(is_malformed & (kind == 0), F.concat(quantity_text, F.lit("x")))
        .otherwise(quantity_text)
        .alias("Quantity"),
        F.when(is_malformed & (kind == 2), F.date_format(timestamp, "dd/MM/yyyy HH:mm"))
        .otherwise(F.date_format(timestamp, "yyyy-MM-dd HH:mm:ss"))
        .alias("InvoiceDate"),
        F.when(is_malformed & (kind == 1), F.lit("n/a"))
        .otherwise(F.format_string("%.2f", price))
        .alias("UnitPrice"),
        F.when(is_missing, F.lit(None).cast("string"))
        .otherwise(F.format_string("%d.0", c + CUSTOMER_ID_OFFSET))
        .alias("CustomerID"),
        F.element_at(
            F.array(*[F.lit(x) for x in COUNTRIES]),
            (F.floor(uniform(seed, "country", c) * len(COUNTRIES)) + 1).cast("int"),
        ).alias("Country"),
    )


def labels(customers_df: DataFrame) -> DataFrame:
    """The planted type of every customer, keyed by the id the job derives ("10042")."""
    names = F.array(*[F.lit(t.name) for t in CUSTOMER_TYPES])
    return customers_df.select(
        (F.col("c") + CUSTOMER_ID_OFFSET).cast("string").alias("customer_id"),
        F.element_at(names, F.col("type_id") + 1).alias("customer_type"),
        F.col("type_id").cast("int").alias("type_id"),
    )


def planted_features(spark: SparkSession, customers: int, seed: int = 42) -> DataFrame:
    """The generated customers' planted features without generating their lines (40 per customer on average):
    `customer_id`, `recency_days`, `frequency`, `monetary` (lines x typical basket value) and `customer_type`.
    For benchmarks and tests of the model stage alone."""
    params = GeneratorParams(lines=customers * 40, customers=customers, seed=seed)
    df = with_line_counts(customers_table(spark, params), params.lines)
    names = F.array(*[F.lit(t.name) for t in CUSTOMER_TYPES])
    return df.select(
        (F.col("c") + CUSTOMER_ID_OFFSET).cast("string").alias("customer_id"),
        (F.col("recency") + 1).alias("recency_days"),
        F.least(F.col("orders"), F.col("n_lines")).cast("int").alias("frequency"),
        (F.col("n_lines") * F.col("quantity_scale") * 5.0).cast("double").alias("monetary"),
        F.element_at(names, F.col("type_id") + 1).alias("customer_type"),
    )


def generate(
    spark: SparkSession, p: GeneratorParams, out: str, formats: tuple[str, ...] = ("parquet",)
) -> dict:
    """Write transactions, labels and generator.json under `out`; returns what generator.json holds."""
    p.check()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    started = time.perf_counter()
    customers_df = with_line_counts(customers_table(spark, p), p.lines)
    tx_df = transactions(customers_df, p)
    if "parquet" in formats:
        tx_df.write.mode("overwrite").parquet(f"{out}/transactions")
    if "csv" in formats:
        tx_df.write.mode("overwrite").option("header", True).csv(f"{out}/transactions_csv")
    labels(customers_df).coalesce(max(1, p.customers // 5_000_000)).write.mode("overwrite").parquet(
        f"{out}/labels"
    )
    per_type = {
        CUSTOMER_TYPES[r["type_id"]].name: int(r["count"])
        for r in customers_df.groupBy("type_id").count().collect()
    }
    summary = {
        "params": asdict(p),
        "formats": list(formats),
        "customer_types": [asdict(t) for t in CUSTOMER_TYPES],
        "customers_per_type": dict(sorted(per_type.items())),
        "product_pools": product_pools(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "generator.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="generate_transactions",
        description="Synthetic Online Retail transactions with planted customer types.",
    )
    parser.add_argument("--lines", type=parse_size, required=True, help="transaction lines (e.g. 1M, 100M)")
    parser.add_argument(
        "--customers", type=parse_size, help="customers (default: lines / 40, as 10M lines : 250k customers)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--returns", type=float, default=0.02, help="share of lines that are returns")
    parser.add_argument(
        "--missing-customer", type=float, default=0.05, help="share of lines without customer"
    )
    parser.add_argument(
        "--duplicates", type=float, default=0.01, help="share of lines repeating the previous one"
    )
    parser.add_argument(
        "--malformed", type=float, default=0.002, help="share of lines with a malformed value"
    )
    parser.add_argument("--end-date", default="2011-12-09", help="date of the latest possible order")
    parser.add_argument(
        "--partitions", type=int, help="Spark partitions (default: one per 2M lines, at least 2)"
    )
    parser.add_argument("--format", choices=["parquet", "csv", "both"], default="parquet")
    parser.add_argument(
        "--description-words",
        type=int,
        help="words per product description, drawn from the catalog's (default: the catalog's names, about 28 "
        "characters; 0: the product number alone, the short strings the benchmark compares with)",
    )
    args = parser.parse_args(argv)
    if args.customers is None:
        args.customers = max(1, args.lines // 40)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = GeneratorParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GeneratorParams)})
    try:
        params.check()
    except ValueError as exc:
        print(f"generate_transactions: error: {exc}", file=sys.stderr)
        return 2
    from jobs.spark_session import build_spark

    spark = build_spark("generate-transactions")
    try:
        formats = ("parquet", "csv") if args.format == "both" else (args.format,)
        summary = generate(spark, params, args.out, formats)
    finally:
        spark.stop()
    print(
        f"{params.lines:,} lines, {params.customers:,} customers {summary['customers_per_type']} "
        f"in {summary['seconds']} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
