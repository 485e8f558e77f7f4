"""The data contract (docs/data-contract.md) against what a run writes: names, types and order of every table's columns."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO
from .synthetic import HEADER


def contract_tables() -> dict[str, list[tuple[str, str]]]:
    """Parse the "## Data contract" section of docs/data-contract.md: table -> [(column, type)] in order."""
    text = (REPO / "docs" / "data-contract.md").read_text(encoding="utf-8")
    section = text.split("\n## Data contract\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[tuple[str, str]]] = {}
    for block in section.split("\n### `")[1:]:
        name = block.split("`", 1)[0]
        rows = re.findall(r"^\| `([^`]+)` \| ([\w<>]+) \|", block, flags=re.MULTILINE)
        tables[name] = rows
    return tables


def expected_columns(table: str, manifest: dict) -> list[tuple[str, str]]:
    """The contract's rows with the placeholders expanded for this run (model features, input columns)."""
    out = []
    for column, type_ in contract_tables()[table]:
        if column == "center_<f>":
            out += [(f"center_{f}", type_) for f in manifest["features"]]
        elif column == "<original column>":
            out += [(c, type_) for c in HEADER.strip().split(",")]
        else:
            out.append((column, type_))
    return out


def test_contract_lists_every_published_table():
    from segmentation.publish.catalog import CATALOG_TABLES

    assert list(contract_tables()) == list(CATALOG_TABLES)
    assert list(contract_tables())[:6] == [
        "segments",
        "profiles",
        "rfm_profiles",
        "elbow",
        "rejects",
        "transitions",
    ]
    assert ("T_days", "int") in contract_tables()["segments"]


@pytest.mark.parametrize("table", list(contract_tables()))
def test_written_schema_matches_the_contract(spark, published, table):
    out, manifests, _ = published
    written = [
        (f.name, f.dataType.simpleString()) for f in spark.read.parquet(str(out / table)).schema.fields
    ]
    assert written == expected_columns(table, manifests[-1])


def test_a_drifted_schema_is_caught(spark, published):
    out, manifests, _ = published
    df = spark.read.parquet(str(out / "elbow")).withColumnRenamed("wcss", "cost")
    written = [(f.name, f.dataType.simpleString()) for f in df.schema.fields]
    assert written != expected_columns("elbow", manifests[-1])


def test_report_off_publishes_every_table_and_no_report(published):
    """The `published` runs have `output.report: false`: every table, the model and the manifest, no reports/."""
    from jobs.segment_customers import summary_lines

    out, manifests, _ = published
    for m in manifests:
        assert m["report"] is False and "report" not in m["timings_s"]
        day = m["snapshot_date"]
        for table in [*contract_tables(), "models", "manifests"]:
            assert (out / table / f"snapshot_date={day}").is_dir(), table
    assert not (out / "reports").exists()
    lines = summary_lines(manifests[-1])
    assert "Report: none (output.report is false)" in lines
    assert not any(line.strip().startswith("reports ") for line in lines)
