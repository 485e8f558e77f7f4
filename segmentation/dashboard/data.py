"""The dashboard's data: the published tables of an output root, read with DuckDB over Parquet.

Takes the output root of the batch job (and of the streaming job, when it wrote there) and hands the pages small
pandas frames: aggregates, one customer, or a filtered campaign list. Only published snapshots are read (those
whose `manifests/snapshot_date=D/_SUCCESS` marker exists: the reader's contract, docs/data-contract.md), and
`segments` is never loaded whole: every query filters or aggregates in DuckDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

#: Which job writes each table the dashboard can show, for the message when one is missing.
PRODUCERS = {
    "segments": "segment-customers (the batch job)",
    "profiles": "segment-customers (the batch job)",
    "transitions": "segment-customers (the batch job; from the second snapshot of an output on)",
    "rejects": "segment-customers (the batch job)",
    "segment_products": "segment-customers with recommendations (recommend.enabled)",
    "basket_rules": "segment-customers with recommendations (recommend.enabled)",
    "customer_state": "stream-segments (the streaming job)",
    "segment_updates": "stream-segments (the streaming job)",
}


class MissingTable(LookupError):
    """A table the page needs is not in the output: the message says which job produces it."""

    def __init__(self, root: Path, table: str) -> None:
        super().__init__(
            f"No `{table}` table under {root}: it is produced by {PRODUCERS.get(table, 'the batch job')}."
        )
        self.table = table


@dataclass
class Campaign:
    """A campaign's filters (empty: no filter on that field)."""

    segments: list[int]
    rfm_segments: list[str]
    recency_days: tuple[float, float] | None = None
    monetary: tuple[float, float] | None = None


class Output:
    """The published tables of one output root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.con = duckdb.connect()

    # ---- what is there -------------------------------------------------------------------------------------
    def snapshots(self) -> list[str]:
        """Published snapshot dates, oldest first (a snapshot is published once its success marker exists)."""
        manifests = self.root / "manifests"
        if not manifests.is_dir():
            return []
        return sorted(
            p.name.split("=", 1)[1]
            for p in manifests.glob("snapshot_date=*")
            if (p / "_SUCCESS").is_file() and (p / "manifest.json").is_file()
        )

    def has(self, table: str) -> bool:
        return any((self.root / table).glob("snapshot_date=*/*.parquet")) or any(
            (self.root / table).glob("*.parquet")
        )

    def manifest(self, snapshot: str) -> dict[str, Any]:
        return json.loads(
            (self.root / "manifests" / f"snapshot_date={snapshot}" / "manifest.json").read_text()
        )

    def _source(self, table: str) -> str:
        """A DuckDB relation over a partitioned table's published snapshots."""
        if not self.has(table):
            raise MissingTable(self.root, table)
        published = ", ".join(f"'{d}'" for d in self.snapshots()) or "NULL"
        pattern = str(self.root / table / "snapshot_date=*" / "*.parquet").replace("'", "''")
        return (
            f"(SELECT * REPLACE (CAST(snapshot_date AS VARCHAR) AS snapshot_date) FROM read_parquet('{pattern}', "
            f"hive_partitioning = true, union_by_name = true) WHERE CAST(snapshot_date AS VARCHAR) IN ({published}))"
        )

    def query(self, sql: str, params: list[Any] | None = None, **tables: str) -> pd.DataFrame:
        """`sql` with `{name}` standing for each table in `tables` (name -> table)."""
        relations = {name: self._source(table) for name, table in tables.items()}
        return self.con.execute(sql.format(**relations), params or []).df()

    # ---- pages ---------------------------------------------------------------------------------------------
    def profiles(self, snapshot: str) -> pd.DataFrame:
        """One row per segment of `snapshot`, in segment id order."""
        return self.query(
            "SELECT * FROM {p} WHERE snapshot_date = ? ORDER BY segment_id", [snapshot], p="profiles"
        )

    def trends(self) -> pd.DataFrame:
        """Customers and revenue per segment and snapshot (stable ids make the lines meaningful)."""
        revenue = "revenue" if "revenue" in self._columns("profiles") else "NULL"
        return self.query(
            f"SELECT snapshot_date, segment_id, segment_name, customers, {revenue} AS revenue FROM {{p}} "
            "ORDER BY snapshot_date, segment_id",
            p="profiles",
        )

    def transitions(self, snapshot: str) -> pd.DataFrame:
        """The moves into `snapshot` from the previous one, largest first."""
        return self.query(
            "SELECT from_segment, to_segment, from_segment_id, to_segment_id, customers, revenue, "
            "CAST(previous_snapshot_date AS VARCHAR) AS previous_snapshot_date FROM {t} WHERE snapshot_date = ? "
            "ORDER BY customers DESC, from_segment, to_segment",
            [snapshot],
            t="transitions",
        )

    def rfm_crosstab(self, snapshot: str, segment_id: int) -> pd.DataFrame:
        """The segment's customers per RFM segment."""
        return self.query(
            "SELECT coalesce(rfm_segment, '(none)') AS rfm_segment, count(*) AS customers FROM {s} "
            "WHERE snapshot_date = ? AND segment_id = ? GROUP BY 1 ORDER BY customers DESC, rfm_segment",
            [snapshot, segment_id],
            s="segments",
        )

    def segment_products(self, snapshot: str, segment_id: int, limit: int = 20) -> pd.DataFrame:
        """The segment's top products by lift in `snapshot` (the table's rank order)."""
        return self.query(
            "SELECT rank, product_id, product_name, customers, support, lift, revenue FROM {t} "
            "WHERE snapshot_date = ? AND segment_id = ? ORDER BY rank LIMIT ?",
            [snapshot, segment_id, limit],
            t="segment_products",
        )

    def basket_rules(self, snapshot: str, segment_id: int, limit: int = 20) -> pd.DataFrame:
        """The segment's strongest basket rules in `snapshot`, highest lift first, names joined by ' + '."""
        return self.query(
            "SELECT array_to_string(antecedent_names, ' + ') AS bought, array_to_string(consequent_names, ' + ') "
            "AS also_buys, support, confidence, lift FROM {t} WHERE snapshot_date = ? AND segment_id = ? "
            "ORDER BY lift DESC, confidence DESC, bought, also_buys LIMIT ?",
            [snapshot, segment_id, limit],
            t="basket_rules",
        )

    def customer(self, customer_id: str) -> pd.DataFrame:
        """One customer's rows across snapshots: segment, features and RFM score."""
        return self.query(
            "SELECT * EXCLUDE (run_id) FROM {s} WHERE customer_id = ? ORDER BY snapshot_date",
            [customer_id],
            s="segments",
        )

    def campaign(self, snapshot: str, campaign: Campaign, limit: int | None = None) -> pd.DataFrame:
        """The customers of `snapshot` that match the campaign's filters, most valuable first."""
        where, params = _campaign_filter(snapshot, campaign)
        sql = (
            "SELECT customer_id, segment_id, segment_name, rfm_segment, recency_days, frequency, monetary FROM {s} "
            f"WHERE {where} ORDER BY monetary DESC, customer_id"
        )
        return self.query(sql + (f" LIMIT {int(limit)}" if limit else ""), params, s="segments")

    def campaign_size(self, snapshot: str, campaign: Campaign) -> int:
        where, params = _campaign_filter(snapshot, campaign)
        return int(self.query(f"SELECT count(*) AS n FROM {{s}} WHERE {where}", params, s="segments")["n"][0])

    def ranges(self, snapshot: str) -> dict[str, tuple[float, float]]:
        """Min and max of recency and monetary over the snapshot's clustered customers (the filters' bounds)."""
        row = self.query(
            "SELECT min(recency_days), max(recency_days), min(monetary), max(monetary) FROM {s} "
            "WHERE snapshot_date = ? AND segment_id IS NOT NULL",
            [snapshot],
            s="segments",
        ).iloc[0]
        return {
            "recency_days": (float(row.iloc[0]), float(row.iloc[1])),
            "monetary": (float(row.iloc[2]), float(row.iloc[3])),
        }

    def rfm_segments(self, snapshot: str) -> list[str]:
        frame = self.query(
            "SELECT DISTINCT rfm_segment FROM {s} WHERE snapshot_date = ? AND rfm_segment IS NOT NULL ORDER BY 1",
            [snapshot],
            s="segments",
        )
        return list(frame["rfm_segment"])

    def latest_updates(self, limit: int = 50) -> pd.DataFrame:
        """The streaming job's latest segment changes (newest first)."""
        if not self.has("segment_updates"):
            raise MissingTable(self.root, "segment_updates")
        pattern = str(self.root / "segment_updates" / "**" / "*.parquet").replace("'", "''")
        return self.con.execute(
            f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true) "
            f"ORDER BY event_time DESC LIMIT {int(limit)}"
        ).df()

    def _columns(self, table: str) -> list[str]:
        return list(self.query("SELECT * FROM {t} LIMIT 0", t=table).columns)


def flow_sentences(transitions: pd.DataFrame, top: int = 10) -> list[str]:
    """The largest moves between two different segments, in words: "412 Loyal customers became At risk"."""
    moves = transitions[transitions["from_segment"] != transitions["to_segment"]].head(top)
    sentences = []
    for row in moves.itertuples(index=False):
        if row.from_segment == "(new)":
            sentences.append(f"{row.customers:,} new customers joined {row.to_segment}")
        elif row.to_segment == "(lost)":
            sentences.append(
                f"{row.customers:,} {row.from_segment} customers are gone (no longer in the data)"
            )
        else:
            sentences.append(f"{row.customers:,} {row.from_segment} customers became {row.to_segment}")
    return sentences


def _campaign_filter(snapshot: str, campaign: Campaign) -> tuple[str, list[Any]]:
    """The WHERE clause (with ? placeholders) and its parameters for a campaign's filters."""
    where, params = ["snapshot_date = ?"], [snapshot]
    if campaign.segments:
        where.append(f"segment_id IN ({', '.join('?' for _ in campaign.segments)})")
        params += campaign.segments
    if campaign.rfm_segments:
        where.append(f"rfm_segment IN ({', '.join('?' for _ in campaign.rfm_segments)})")
        params += campaign.rfm_segments
    for column, bounds in (("recency_days", campaign.recency_days), ("monetary", campaign.monetary)):
        if bounds is not None:
            where.append(f"{column} BETWEEN ? AND ?")
            params += [bounds[0], bounds[1]]
    return " AND ".join(where), params
