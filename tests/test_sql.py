"""The example DuckDB queries of scripts/sql/ on published output: answers checked against pandas."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("run_sql", REPO / "scripts" / "run_sql.py")
run_sql = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_sql)


def _segments(out) -> pd.DataFrame:
    df = pd.read_parquet(out / "segments")
    df["snapshot_date"] = pd.to_datetime(df["snapshot_date"].astype(str))
    return df[df.segment_id.notna()]


def _dates(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(snapshot_date=pd.to_datetime(df["snapshot_date"]))


@pytest.fixture(scope="module")
def con(published):
    out, _, _ = published
    return run_sql.connect(out)


def test_segment_sizes_over_time(con, published):
    out, manifests, _ = published
    actual = _dates(run_sql.run_query(con, "segment_sizes_over_time"))
    seg = _segments(out)
    expected = (
        seg.groupby(["snapshot_date", "segment_id", "segment_name"]).size().rename("customers").reset_index()
    )
    columns = ["snapshot_date", "segment_id", "segment_name", "customers"]

    def as_records(df):
        return [(str(d.date()), int(i), n, int(c)) for d, i, n, c in df[columns].itertuples(index=False)]

    assert as_records(actual) == as_records(expected)
    assert actual.customers.tolist() == [8, 10, 12, 8, 10, 12, 6]
    assert actual.groupby("snapshot_date").share_customers.sum().round(3).tolist() == [1.0, 1.0]


def test_top_customers_per_segment(con, published):
    out, manifests, _ = published
    actual = run_sql.run_query(con, "top_customers_per_segment")
    seg = _segments(out)
    latest = seg[seg.snapshot_date == seg.snapshot_date.max()]
    expected = (
        latest.sort_values(["segment_id", "monetary", "customer_id"], ascending=[True, False, True])
        .groupby("segment_id")
        .head(3)
    )
    assert actual.customer_id.tolist() == expected.customer_id.tolist()
    assert actual.monetary.tolist() == pytest.approx(expected.monetary.tolist())
    assert len(actual) == 12 and actual["rank"].tolist() == [1, 2, 3] * 4


def test_revenue_share(con, published):
    out, _, _ = published
    actual = _dates(run_sql.run_query(con, "revenue_share"))
    seg = _segments(out)
    revenue = seg.groupby(["snapshot_date", "segment_id"]).monetary.sum()
    share = revenue / revenue.groupby(level=0).transform("sum")
    assert actual.revenue.tolist() == pytest.approx(revenue.round(2).tolist())
    assert actual.share_revenue.tolist() == pytest.approx(share.round(4).tolist())


def test_champions_to_at_risk_on_real_output_matches_pandas(con, published):
    out, _, _ = published
    seg = _segments(out).sort_values(["customer_id", "snapshot_date"])
    seg["previous"] = seg.groupby("customer_id").segment_name.shift()
    expected = seg[(seg.previous == "Champions") & (seg.segment_name == "At risk")]
    assert (
        run_sql.run_query(con, "champions_to_at_risk").customer_id.tolist() == expected.customer_id.tolist()
    )


def _write_snapshot(root, day: str, rows: list[tuple], published: bool = True) -> None:
    part = root / "segments" / f"snapshot_date={day}"
    part.mkdir(parents=True)
    pd.DataFrame(rows, columns=["customer_id", "segment_id", "segment_name", "monetary"]).to_parquet(
        part / "part-00000.parquet"
    )
    (root / "manifests" / f"snapshot_date={day}").mkdir(parents=True)
    if published:
        (root / "manifests" / f"snapshot_date={day}" / "_SUCCESS").write_text("")


def test_champions_to_at_risk_and_unpublished_snapshots_on_hand_made_output(tmp_path):
    _write_snapshot(
        tmp_path,
        "2011-01-01",
        [("a", 1, "Champions", 10.0), ("b", 1, "Champions", 20.0), ("c", 2, "At risk", 1.0)],
    )
    _write_snapshot(
        tmp_path,
        "2011-02-01",
        [("a", 2, "At risk", 11.0), ("b", 1, "Champions", 25.0), ("c", 2, "At risk", 1.0)],
    )
    # half-written (no success marker): a reader keeping to the contract ignores it
    _write_snapshot(tmp_path, "2011-03-01", [("b", 2, "At risk", 25.0)], published=False)
    con = run_sql.connect(tmp_path)
    moved = run_sql.run_query(con, "champions_to_at_risk")
    assert moved.customer_id.tolist() == ["a"]
    assert [str(d.date()) for d in pd.to_datetime(moved.previous_snapshot_date)] == ["2011-01-01"]
    assert moved.monetary.tolist() == [11.0]
    sizes = run_sql.run_query(con, "segment_sizes_over_time")
    assert [str(d.date()) for d in pd.to_datetime(sizes.snapshot_date.unique())] == [
        "2011-01-01",
        "2011-02-01",
    ]
