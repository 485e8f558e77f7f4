"""Publishing: a killed run leaves the published snapshots as they were, reruns are idempotent, and runs for
different snapshots at the same time do not damage each other."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from segmentation.pipeline import run_segmentation
from segmentation.publish.snapshot import published_snapshots

from . import synthetic
from .conftest import REPO


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every published file (the `_staging` and `_trash` work areas are not part of the data)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).parts[0].startswith("_")
    }


def read_published(spark, out: Path, table: str) -> pd.DataFrame:
    """A table as a reader following the contract sees it: only snapshots with a manifest success marker."""
    from segmentation.io import HadoopFs

    dates = published_snapshots(HadoopFs(spark, str(out)), str(out))
    df = spark.read.parquet(str(out / table)).toPandas()
    df["snapshot_date"] = df["snapshot_date"].astype(str)
    return df[df.snapshot_date.isin(dates)]


def assignment(df: pd.DataFrame) -> set[frozenset]:
    """The grouping of customers into segments, whatever the ids."""
    clustered = df[df.segment_id.notna()]
    return {frozenset(g.customer_id) for _, g in clustered.groupby("segment_id")}


def _job(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.segment_customers", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the job and its JVM in one process group, killed together
        **kwargs,
    )


def test_killed_during_write_leaves_published_snapshots_untouched(spark, published, tmp_path):
    out_src, manifests, tmp = published
    out = tmp_path / "out"
    shutil.copytree(out_src, out)
    before = tree_digest(out)
    config = synthetic.write_config(tmp_path / "job.yaml")
    # rerun the second snapshot with another k: it would replace every table of that snapshot
    proc = _job(["--config", str(config), "--input", str(tmp / "in2"), "--output", str(out), "--k", "2"])
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "stage write: started" in line:
                # kill once the segments table is being written into staging
                deadline = time.monotonic() + 120
                while not list(out.glob("_staging/*/segments")) and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    # killed mid-write: its staging area is there, nothing published changed
    staged = list((out / "_staging").iterdir())
    assert len(staged) == 1 and (staged[0] / "segments").exists()
    assert tree_digest(out) == before
    segments = read_published(spark, out, "segments")
    assert sorted(segments.snapshot_date.unique()) == [m["snapshot_date"] for m in manifests]
    assert set(segments.run_id) == {m["run_id"] for m in manifests}
    assert len(assignment(segments[segments.snapshot_date == manifests[1]["snapshot_date"]])) == 4


def test_rerun_replaces_only_that_snapshot_with_the_same_content(spark, published, tmp_path):
    out_src, manifests, tmp = published
    out = tmp_path / "out"
    shutil.copytree(out_src, out)
    first_date = manifests[0]["snapshot_date"]
    before = tree_digest(out)
    rerun = run_segmentation(spark, synthetic.job_config(tmp / "in1" / "log.csv", out))
    after = tree_digest(out)
    assert rerun["snapshot_date"] == first_date and rerun["run_id"] != manifests[0]["run_id"]
    # the other snapshot's files are byte for byte the same; this one's were replaced
    changed = {
        p.split("/")[1] for p in set(before) ^ set(after) | {p for p in before if before[p] != after.get(p)}
    }
    assert changed == {f"snapshot_date={first_date}"}
    old = pd.read_parquet(out_src / "segments" / f"snapshot_date={first_date}").drop(columns="run_id")
    new = pd.read_parquet(out / "segments" / f"snapshot_date={first_date}").drop(columns="run_id")
    pd.testing.assert_frame_equal(
        new.sort_values("customer_id").reset_index(drop=True),
        old.sort_values("customer_id").reset_index(drop=True),
    )
    assert list((out / "_staging").glob("*")) == [] if (out / "_staging").exists() else True


def test_two_snapshots_at_once_do_not_damage_each_other(spark, published, console_snapshots):
    """conftest.console_snapshots runs the console script for the `published` snapshots at the same time, into one
    output: both publish, and each snapshot groups the customers as the runs one after the other did."""
    out_src, manifests, _ = published
    out = console_snapshots.out
    assert published_snapshots_local(out) == [m["snapshot_date"] for m in manifests]
    concurrent = read_published(spark, out, "segments")
    alone = read_published(spark, out_src, "segments")
    for m in manifests:
        day = m["snapshot_date"]
        assert assignment(concurrent[concurrent.snapshot_date == day]) == assignment(
            alone[alone.snapshot_date == day]
        )
    assert len(assignment(concurrent[concurrent.snapshot_date == manifests[1]["snapshot_date"]])) == 4
    assert not (out / "_staging").exists() or list((out / "_staging").iterdir()) == []


def published_snapshots_local(out: Path) -> list[str]:
    return sorted(p.parent.name.split("=", 1)[1] for p in out.glob("manifests/snapshot_date=*/_SUCCESS"))
