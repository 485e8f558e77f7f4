"""The recommend stage: product rules, basket rules with known answers, ALS against popularity on planted
preferences, the fallback for customers without history, and the stage turning itself off (or refusing)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import random
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import DEFAULTS, validate_config
from segmentation.errors import SchemaError
from segmentation.pipeline import run_segmentation
from segmentation.recommend.als import top_items
from segmentation.recommend.baskets import ALL_CUSTOMERS, basket_rules, min_support, sampled
from segmentation.recommend.evaluation import METRICS, ranking_metrics, sampled_customers
from segmentation.recommend.products import pattern_match, product_purchases

from . import synthetic

ITEMS_SCHEMA = (
    "customer_id string, order_key string, date date, is_return boolean, product_id string, "
    "product_name string, quantity decimal(18,3), value decimal(38,9), lines bigint"
)


def _items(spark, rows):
    """Ledger items (`validate.ledger_items`) from (customer, order, product, is_return) tuples."""
    day = dt.date(2011, 5, 1)
    one, price = Decimal("1.000"), Decimal("2.500000000")
    data = [(c, o, day, r, p, f"name {p}" if p else None, one, price, 1) for c, o, p, r in rows]
    return spark.createDataFrame(data, ITEMS_SCHEMA)


def test_patterns_match_whole_codes(spark):
    codes = ["POST", "POSTAGE", "85099B", "B", "gift_0001_20", "gift_0002_20", "m", "M"]
    df = spark.createDataFrame([(c,) for c in codes], "code string")
    matched = df.filter(pattern_match(F.col("code"), ["POST", "B", "gift_0001_*", "M"])).collect()
    assert sorted(r.code for r in matched) == ["B", "M", "POST", "gift_0001_20"]


def test_non_products_returns_and_common_codes_are_left_out(spark):
    rows = []
    for o in range(8):  # 8 orders of customer c1: BAG in all of them, A in 2, POST in 3
        rows.append(("c1", f"o{o}", "BAG", False))
        if o < 2:
            rows.append(("c1", f"o{o}", "A", False))
        if o < 3:
            rows.append(("c1", f"o{o}", "POST", False))
    rows += [("c2", "r1", "A", True), ("c2", "p1", "K", False), ("c2", "p1", "", False)]
    rows += [("c2", "p1", "gift_0001_10", False), ("c3", "p2", "C", False)]
    products = product_purchases(_items(spark, rows), DEFAULTS["recommend"])
    bought = sorted((r.customer_id, r.order_key, r.product_id) for r in products.purchases_df.collect())
    # BAG is in 8 of the 10 baskets (> 25%): left out; POST and the voucher match the patterns; the return and
    # the line without a code are not purchases
    assert bought == [("c1", "o0", "A"), ("c1", "o1", "A"), ("c2", "p1", "K"), ("c3", "p2", "C")]
    assert products.excluded == {
        "returns_and_rejects": "not in baskets",
        "lines_without_product": 1,
        "excluded_pattern_lines": 4,
        "excluded_pattern_codes": 2,
        "above_basket_share": ["BAG"],
    }


def basket_cfg(**overrides) -> dict:
    """`recommend.baskets` settings for the hand-made baskets: these, with `overrides`."""
    cfg = {
        "min_support": 0.02,
        "min_baskets": 20,
        "max_items": 200,
        "max_baskets": 100_000,
        "min_confidence": 0.2,
        "max_rules": 50,
    }
    return {**cfg, **overrides}


def test_basket_rules_have_the_known_support_confidence_and_lift(spark):
    # 40 baskets: {A, B} x 20, {A, C} x 10, {B, C} x 10. Rule A -> B: support 20/40, confidence 20/30,
    # lift (20/30) / (30/40) = 8/9
    baskets = [["A", "B"]] * 20 + [["A", "C"]] * 10 + [["B", "C"]] * 10
    df = spark.createDataFrame([(1, b) for b in baskets], "segment_id int, items array<string>")
    names = spark.createDataFrame([("A", "apple"), ("B", "bread")], "product_id string, product_name string")
    cfg = basket_cfg(min_support=0.2, min_baskets=2, min_confidence=0.5)
    rules_df, summary = basket_rules(spark, df, {1: "Champions"}, names, cfg)
    rules = {(r.segment_name, tuple(r.antecedent), tuple(r.consequent)): r for r in rules_df.collect()}
    a_b = rules[("Champions", ("A",), ("B",))]
    assert (a_b.support, a_b.confidence) == (0.5, pytest.approx(2 / 3, abs=1e-12))
    assert a_b.lift == pytest.approx(8 / 9, abs=1e-12)
    assert (a_b.antecedent_names, a_b.consequent_names, a_b.baskets) == (["apple"], ["bread"], 40)
    # C -> A: confidence 10/20; A -> C (10/30) is below min_confidence
    c_a = rules[("Champions", ("C",), ("A",))]
    assert (c_a.confidence, c_a.lift, c_a.antecedent_names) == (
        0.5,
        pytest.approx(0.5 / 0.75),
        ["C"],
    )  # no name: id
    assert ("Champions", ("A",), ("C",)) not in rules
    # every rule found over everyone is found in the only segment too, and nothing below the confidence
    assert {k[1:] for k in rules if k[0] == ALL_CUSTOMERS} == {k[1:] for k in rules if k[0] == "Champions"}
    assert all(r.confidence >= 0.5 for r in rules.values())
    assert summary["Champions"] == {
        "baskets": 40,
        "rules": len(rules) // 2,
        "min_support": 0.2,
        "sampled": False,
    }


def test_support_comes_from_the_basket_count():
    cfg = {"min_support": 0.02, "min_baskets": 20}
    assert min_support(100_000, cfg) == 0.02
    assert min_support(500, cfg) == 0.04
    assert min_support(0, cfg) == 20
    # the 200th most frequent product is in 300 of 1000 baskets: only products as frequent as it can count
    assert min_support(1000, cfg, kth_item_baskets=300) == 0.3


def test_a_small_segment_has_no_rules(spark):
    df = spark.createDataFrame(
        [(1, ["A", "B"])] * 5 + [(2, ["A", "B"])] * 30, "segment_id int, items array<string>"
    )
    names = spark.createDataFrame([], "product_id string, product_name string")
    cfg = basket_cfg()
    rules_df, summary = basket_rules(spark, df, {1: "Small", 2: "Large"}, names, cfg)
    assert summary["Small"] == {"baskets": 5, "rules": 0, "min_support": None, "sampled": False}
    assert summary["Large"]["rules"] == 2
    assert {r.segment_name for r in rules_df.collect()} == {ALL_CUSTOMERS, "Large"}


def test_a_large_set_is_mined_on_a_sample_the_same_on_any_partitioning(spark):
    """Above `max_baskets` a set is mined on a seeded sample of about that many baskets; the sample draws on a
    hash of the order, so the same seed gives the same baskets (and rules) whatever the partitioning."""
    # 2,000 baskets: {A, B} in 3 of 4, {A, C} in the rest: A -> B's confidence is 3/4 in any fair sample
    rows = [(1, ["A", "B"] if i % 4 else ["A", "C"], i * 7919) for i in range(2000)]
    df = spark.createDataFrame(rows, "segment_id int, items array<string>, _basket long")
    one, four = sampled(df.coalesce(1), 0.25, 42), sampled(df.repartition(4), 0.25, 42)
    drawn = sorted(r._basket for r in one.collect())
    assert drawn == sorted(r._basket for r in four.collect())
    assert 400 < len(drawn) < 600 and drawn != sorted(r._basket for r in sampled(df, 0.25, 7).collect())
    names = spark.createDataFrame([], "product_id string, product_name string")
    cfg = basket_cfg(min_support=0.1, max_baskets=500, min_confidence=0.5)
    rules_df, summary = basket_rules(spark, df.repartition(3), {1: "Big"}, names, cfg, seed=42)
    # A -> B, B -> A, C -> A (A -> C, 1/4, is below the confidence)
    assert summary["Big"] == {"baskets": 2000, "rules": 3, "min_support": 0.1, "sampled": True}
    rules = {(r.segment_name, tuple(r.antecedent), tuple(r.consequent)): r for r in rules_df.collect()}
    a_b = rules[("Big", ("A",), ("B",))]
    # mined on the sample: its counts, not the set's (the sample's share of {A, B} is near 3/4)
    in_sample = [b for _, b, h in rows if h in set(drawn)]
    share = sum(b == ["A", "B"] for b in in_sample) / len(in_sample)
    assert a_b.baskets == 2000 and a_b.confidence == pytest.approx(share, abs=1e-12)
    assert abs(share - 0.75) < 0.06


# ---------------------------------------------------------------------------------------------------------------
# The whole stage on generated data with planted product preferences


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    """A generated log (planted types and product pools) run through the job with k = 4."""
    from jobs.generate_transactions import GeneratorParams, generate

    tmp = tmp_path_factory.mktemp("planted")
    summary = generate(spark, GeneratorParams(lines=120_000, customers=3_000, seed=11), str(tmp / "gen"))
    cfg = copy.deepcopy(DEFAULTS)
    cfg["input"]["path"] = str(tmp / "gen" / "transactions")
    cfg["output"].update(path=str(tmp / "out"), report=False)
    cfg["model"].update(k=4, stability_fits=0)
    cfg["catalog"]["enabled"] = False
    manifest = run_segmentation(spark, validate_config(cfg))
    out = tmp / "out"
    lines = spark.read.parquet(str(tmp / "gen" / "transactions")).toPandas()
    return out, manifest, summary, lines


def test_top_items_leave_out_the_bought_and_unknown_items():
    """ALS's top N in numpy: scores are user x item factors; bought items and items without factors never
    come back; ties go to the lower index; a user who bought everything gets nothing (popularity fills)."""
    factors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [9.0, 9.0]], dtype=np.float32)
    known = np.array([True, True, True, True, False])  # item 4 had no ratings in the fit
    users = np.array([[1.0, 2.0], [1.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    bought = pa.array([[2], [], [0, 1, 2, 3]], type=pa.list_(pa.int32()))
    items, scores, counts = top_items(users, bought, factors, known, 3)
    # user 0: scores 1, 2, 3 (bought), 1.5 -> 1, 3, 0; user 1: 1, 1, 2, 1 -> 2, then 0 and 1 tie at 1 (and 3):
    # the lower indices; user 2: everything known was bought
    assert counts.tolist() == [3, 3, 0]
    assert items.tolist() == [1, 3, 0, 2, 0, 1]
    assert scores.tolist() == [2.0, 1.5, 1.0, 2.0, 1.0, 1.0]
    # a slice of a larger batch (offsets not starting at 0) reads its own users' bought items
    sliced = pa.array([[0], [2], [], [0, 1, 2, 3]], type=pa.list_(pa.int32())).slice(1)
    assert top_items(users, sliced, factors, known, 3)[0].tolist() == items.tolist()


def test_the_evaluation_samples_customers_with_the_seed(spark):
    """At most about `max_customers` customers, all their lines, the same ones for the same seed (counted or
    told how many bought); all of them when fewer."""
    lines = spark.range(3000).select((F.col("id") % 1000).cast("string").alias("customer_id"), "id")
    picked = {
        seed: sorted({r.customer_id for r in sampled_customers(lines, 200, seed).collect()})
        for seed in (1, 2)
    }
    assert 150 < len(picked[1]) < 250 and picked[1] != picked[2]
    told = sampled_customers(lines, 200, 1, customers=1000)
    assert sorted({r.customer_id for r in told.collect()}) == picked[1]
    assert told.count() == 3 * len(picked[1])  # every line of a drawn customer
    assert sampled_customers(lines, 1000, 1) is lines


def test_ranking_metrics_are_the_ranking_evaluators(spark):
    """The one-aggregation metrics equal RankingEvaluator's: by hand per customer, and averaged over the hand
    cases (hits anywhere, lists shorter and longer than k, labels longer than k, no hit, an empty prediction,
    an empty label) and over 200 drawn ones."""
    k = 5
    hand = [
        ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 5.0]),  # hits at 2 and 5
        ([7.0, 8.0], [8.0, 9.0, 10.0]),  # shorter than k, a hit at 2
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [6.0, 7.0]),  # hits past k: MAP counts them, @k does not
        ([1.0, 2.0, 3.0], [4.0]),  # no hit
        ([], [1.0, 2.0]),  # nothing predicted
        ([1.0, 2.0], []),  # no label: 0 everywhere
        ([3.0, 1.0, 2.0, 9.0, 8.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),  # more labels than k
    ]
    rng = random.Random(7)
    drawn = [
        (rng.sample(range(30), rng.randint(0, 8)), rng.sample(range(30), rng.randint(1, 9)))
        for _ in range(200)
    ]
    rows = hand + [([float(x) for x in p], [float(x) for x in lab]) for p, lab in drawn]
    df = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    ours = df.select(
        *[v.alias(c) for c, v in ranking_metrics(F.col("prediction"), F.col("label"), k).items()]
    ).toPandas()
    # the hand cases, by hand: precision 2/5, recall 2/2, NDCG (1/log 3 + 1/log 6) / (1/log 2 + 1/log 3),
    # MAP (1/2 + 2/5) / 2
    first = ours.iloc[0]
    assert first.precision_at_k == pytest.approx(0.4)
    assert first.recall_at_k == pytest.approx(1.0)
    ndcg = (1 / math.log(3) + 1 / math.log(6)) / (1 / math.log(2) + 1 / math.log(3))
    assert first.ndcg_at_k == pytest.approx(ndcg)
    assert first["map"] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert ours.iloc[2].tolist() == pytest.approx([0.0, 0.0, 0.0, (1 / 6 + 2 / 7) / 2])
    assert ours.iloc[5].tolist() == [0.0, 0.0, 0.0, 0.0]
    # the hand cases alone and all the rows, against the evaluator
    for metric, column in METRICS.items():
        evaluator = RankingEvaluator(predictionCol="prediction", labelCol="label", metricName=metric, k=k)
        hand_only = df.limit(len(hand))
        assert ours[column].iloc[: len(hand)].mean() == pytest.approx(
            evaluator.evaluate(hand_only), abs=1e-12
        )
        assert ours[column].mean() == pytest.approx(evaluator.evaluate(df), abs=1e-12), column


def test_als_beats_popularity_on_planted_preferences(planted):
    out, manifest, _, _ = planted
    evaluation = pd.read_parquet(out / "recommendation_eval")
    overall = evaluation[evaluation.segment_id.isna()].set_index("method")
    assert overall.loc["als", "precision_at_k"] > 1.5 * overall.loc["global_popular", "precision_at_k"]
    assert overall.loc["als", "ndcg_at_k"] > overall.loc["global_popular", "ndcg_at_k"]
    headline = manifest["recommend"]["evaluation"]
    assert headline["overall"]["als"]["precision_at_k"] == overall.loc["als", "precision_at_k"]
    assert headline["customers"] == overall.loc["als", "customers"] > 100


def test_segment_products_come_from_the_segments_pool(planted):
    out, _, summary, _ = planted
    products = pd.read_parquet(out / "segment_products")
    pools = {name: (int(lo), int(hi)) for name, (lo, hi) in summary["product_pools"].items()}

    def pool_of(code):
        return next((name for name, (lo, hi) in pools.items() if lo <= int(code) <= hi), "shared")

    # each segment's top 10 by lift is (mostly) from one planted pool, and the segments of the three types
    # with repeat orders find their three pools; one-off buyers (3 lines each) spread over their pool too thinly
    # for any product to reach 2% of their segment, so theirs lists the shared catalog's products
    found = {}
    for segment_id, group in products[products["rank"] <= 10].groupby("segment_id"):
        share = group.product_id.map(pool_of).value_counts(normalize=True)
        assert share.iloc[0] >= 0.8, (segment_id, share)
        found[segment_id] = share.index[0]
    assert sorted(found.values()) == ["champion", "lapsed", "regular", "shared"]
    # the pool segments' listed products are bought far more in the segment than overall
    pool_rows = products[products.segment_id.map(found) != "shared"]
    assert (pool_rows.lift > 2).all()
    top = products.iloc[0]
    assert top.support == pytest.approx(top.customers / top.segment_customers)


def test_no_recommended_product_was_bought_and_everyone_gets_ten(planted):
    out, _, _, lines = planted
    recs = pd.read_parquet(out / "recommendations")
    segments = pd.read_parquet(out / "segments")
    assert recs.groupby("customer_id").size().eq(10).all()
    assert set(recs.customer_id) == set(segments.customer_id)
    ranks = recs.groupby("customer_id")["rank"].agg(lambda r: tuple(sorted(r)))
    assert set(ranks) == {tuple(range(1, 11))}
    # the purchase lines (a product only returned, or only on a rejected line, was not bought)
    purchase = (
        ~lines.InvoiceNo.str.startswith("C")
        & lines.Quantity.str.fullmatch(r"\d+")
        & lines.UnitPrice.str.fullmatch(r"[\d.]+")
        & lines.InvoiceDate.str.match(r"\d{4}-")
        & lines.CustomerID.notna()
    )
    bought = lines[purchase].assign(customer_id=lines.CustomerID.str.replace(".0", "", regex=False))
    assert len(bought) > 0.9 * len(lines)
    bought = set(zip(bought.customer_id, bought.StockCode))
    assert not any((c, p) in bought for c, p in zip(recs.customer_id, recs.product_id))
    assert set(recs.reason) <= {"als", "segment_popular", "global_popular"}


def test_the_tables_keep_the_contract(spark, planted):
    from .test_contract import contract_tables

    out, manifest, _, _ = planted
    for table in ("segment_products", "basket_rules", "recommendations", "recommendation_eval"):
        written = [
            (f.name, f.dataType.simpleString()) for f in spark.read.parquet(str(out / table)).schema.fields
        ]
        assert written == contract_tables()[table], table
    rules = pd.read_parquet(out / "basket_rules")
    # the planted windows give no pair a confidence of 20%: the table is empty, and the manifest says so
    summary = manifest["recommend"]["basket_rules"]
    assert {n: s["rules"] for n, s in summary.items()} == {
        n: int((rules.segment_name == n).sum()) for n in summary
    }
    assert summary[ALL_CUSTOMERS]["baskets"] > 1000 and summary[ALL_CUSTOMERS]["min_support"] > 0


def test_customers_without_history_get_popular_products(spark, tmp_path):
    """A customer whose only lines are returns has no purchase: ALS cannot score them, so their ten are the
    most popular products overall (they are excluded: no segment)."""
    rows = synthetic.transactions()
    path = synthetic.write_csv(
        tmp_path / "log.csv", rows, "C999001,SKU01,ITEM,-2,2011-06-01 10:00:00,5.0,77777.0,United Kingdom\n"
    )
    cfg = synthetic.job_config(path, tmp_path / "out", recommend=True, k=3)
    cfg["recommend"]["top_n"] = 3
    cfg["recommend"]["segment_products"]["min_customers"] = 1
    run_segmentation(spark, validate_config(cfg))
    recs = pd.read_parquet(tmp_path / "out" / "recommendations")
    lonely = recs[recs.customer_id == "77777"].sort_values("rank")
    assert lonely.reason.tolist() == ["global_popular"] * 3
    assert lonely.segment_id.isna().all()
    assert lonely["rank"].tolist() == [1, 2, 3]
    # the scores are shares of buyers, best first
    assert lonely.score.is_monotonic_decreasing and (lonely.score <= 1).all()


def test_an_input_without_products_publishes_without_the_stage(spark, tmp_path):
    path = tmp_path / "log.csv"
    rows = synthetic.transactions()
    path.write_text(
        "InvoiceNo,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
        + "".join(f"{i},{q},{ts},{p},{c}\n" for i, c, ts, q, p in rows),
        encoding="utf-8",
    )
    cfg = synthetic.job_config(path, tmp_path / "out", recommend=True, k=3)
    manifest = run_segmentation(spark, validate_config(cfg))
    assert manifest["recommend"] == {
        "enabled": False,
        "reason": "the input maps no product column (input.columns.product_id)",
    }
    assert not (tmp_path / "out" / "recommendations").exists()
    cfg["recommend"]["enabled"] = True
    with pytest.raises(
        SchemaError,
        match=r"input is missing mapped column\(s\) product_id='StockCode', "
        r"product_name='Description'; found columns: InvoiceNo, Quantity",
    ):
        run_segmentation(spark, validate_config(cfg))


def test_a_rerun_without_the_stage_unpublishes_its_tables(spark, tmp_path):
    path = synthetic.write_csv(tmp_path / "log.csv", synthetic.transactions())
    cfg = synthetic.job_config(path, tmp_path / "out", recommend=True, k=3)
    first = run_segmentation(spark, validate_config(cfg))
    day = first["snapshot_date"]
    assert (tmp_path / "out" / "recommendations" / f"snapshot_date={day}").is_dir()
    cfg["recommend"]["enabled"] = False
    second = run_segmentation(spark, validate_config(cfg))
    assert second["recommend"] == {"enabled": False, "reason": "recommend.enabled is false"}
    for table in ("segment_products", "basket_rules", "recommendations", "recommendation_eval"):
        assert not (tmp_path / "out" / table / f"snapshot_date={day}").exists(), table
    published = json.loads(
        (tmp_path / "out" / "manifests" / f"snapshot_date={day}" / "manifest.json").read_text()
    )
    assert published["run_id"] == second["run_id"]
    assert (tmp_path / "out" / "segments" / f"snapshot_date={day}").is_dir()


def test_items_carry_the_product_through_the_ledger(spark):
    from segmentation.features.rfm import with_line_kind
    from segmentation.sources.read import CORRUPT_COLUMN
    from segmentation.sources.validate import classify_weighted, ledger, ledger_items

    inp = copy.deepcopy(DEFAULTS["input"])
    inp["timestamp_format"] = "yyyy-MM-dd HH:mm:ss"
    rows = [
        ("1", "A", "apple", "2", "2011-01-01 10:00:00", "1.5", "17850.0"),
        ("1", "A", "apple", "3", "2011-01-01 10:00:00", "1.5", "17850.0"),
        ("1", "B", "bread", "1", "2011-01-01 10:00:00", "2.0", "17850.0"),
        ("C2", "A", "apple", "-1", "2011-01-02 10:00:00", "1.5", "17850.0"),
    ]
    cols = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
    df = spark.createDataFrame(rows, cols).withColumn(CORRUPT_COLUMN, F.lit(None).cast(T.StringType()))
    classified = classify_weighted(df, inp, True, cols).transform(
        with_line_kind, return_prefix="C", has_order_id=True
    )
    items = ledger_items(ledger(classified, cols)).collect()
    got = sorted(
        (r.order_key, r.product_id, r.product_name, float(r.quantity), float(r.value), r.lines, r.is_return)
        for r in items
    )
    assert got == [
        ("1", "A", "apple", 5.0, 7.5, 2, False),
        ("1", "B", "bread", 1.0, 2.0, 1, False),
        ("C2", "A", "apple", -1.0, -1.5, 1, True),
    ]
