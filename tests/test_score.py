"""Scoring without retraining: a saved model reproduces its training assignment and scores new customers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from jobs.score_customers import job_config, parse_args
from segmentation.errors import InputError, OutputError
from segmentation.score import score_customers

from . import synthetic


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("customer_id").reset_index(drop=True)


def test_scoring_the_training_data_reproduces_the_training_assignment(spark, published, tmp_path):
    out, manifests, tmp = published
    trained = manifests[1]
    cfg = synthetic.job_config(tmp / "in2" / "log.csv", tmp_path / "scored")
    manifest = score_customers(spark, cfg, str(out), trained["snapshot_date"])
    assert manifest["run_id"] == trained["run_id"]
    assert manifest["snapshot_date"] == trained["snapshot_date"]
    day = f"snapshot_date={trained['snapshot_date']}"
    scored = _sorted(pd.read_parquet(tmp_path / "scored" / "segments" / day))
    training = _sorted(pd.read_parquet(out / "segments" / day))
    pd.testing.assert_frame_equal(scored, training)  # every column, distances and RFM scores included
    assert manifest["segment_sizes"] == {
        str(k): int(v) for k, v in training.segment_id.value_counts().sort_index().items()
    }
    written = json.loads((tmp_path / "scored" / "manifests" / day / "manifest.json").read_text())
    assert written["kind"] == "scoring" and written["model_snapshot_date"] == trained["snapshot_date"]
    assert (tmp_path / "scored" / "manifests" / day / "_SUCCESS").exists()


def test_scoring_new_transactions_at_a_later_date_uses_the_latest_model(spark, published, tmp_path):
    out, manifests, tmp = published
    # the first snapshot's customers scored later (their last purchase: 2011-06-27) with the latest model
    cfg = synthetic.job_config(tmp / "in1" / "log.csv", tmp_path / "scored", snapshot_date="2011-09-01")
    manifest = score_customers(spark, cfg, str(out))
    assert manifest["model_snapshot_date"] == manifests[1]["snapshot_date"]
    scored = pd.read_parquet(tmp_path / "scored" / "segments" / "snapshot_date=2011-09-01")
    assert set(scored.run_id) == {manifests[1]["run_id"]}
    assert len(scored) == 30 and scored.segment_id.notna().all()
    assert scored[scored.customer_id.str.startswith("1")].recency_days.min() == 66
    assert set(scored.segment_id) <= {int(s) for s in manifests[1]["segments"]}


def test_scoring_errors_say_what_is_wrong(spark, published, tmp_path):
    out, manifests, tmp = published
    cfg = synthetic.job_config(tmp / "in1" / "log.csv", tmp_path / "scored")
    with pytest.raises(
        InputError, match=r"no published model for snapshot 2001-01-01 under .* \(available: "
    ):
        score_customers(spark, cfg, str(out), "2001-01-01")
    with pytest.raises(OutputError, match="score into another output path than the model's"):
        score_customers(spark, synthetic.job_config(tmp / "in1" / "log.csv", out), str(out))
    with pytest.raises(InputError, match="no published model under"):
        score_customers(spark, cfg, str(tmp_path / "empty"))


def test_score_customers_arguments(tmp_path):
    args = parse_args(["--model-path", "m", "--input", "x.csv", "--input-format", "csv", "--output", "o"])
    cfg = job_config(args)
    assert (cfg["input"]["path"], cfg["input"]["format"], cfg["output"]["path"]) == ("x.csv", "csv", "o")
    with pytest.raises(SystemExit):
        parse_args(["--model-path", "m", "--output", "o", "--scoring-date", "2011-13-01"])
