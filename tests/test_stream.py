"""stream-segments: the bundled data split by day and streamed in order gives the batch job's features and
score-customers' segments, customer for customer; replays, copies, crashes and the clock change nothing twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from segmentation.config import apply_overrides, load_config, validate_config
from segmentation.errors import InputError
from segmentation.pipeline import run_segmentation
from segmentation.publish.stream_store import StreamStore
from segmentation.publish.tables import SEGMENT_COLUMNS
from segmentation.score import score_customers
from segmentation.sources.validate import REJECT_REASONS
from segmentation.stream.memory import OrdersInMemory
from segmentation.stream.run import run_stream

from . import synthetic

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "segmentation" / "data" / "online_retail"
#: The model is trained on the months before, the stream reads these day by day.
STREAMED_MONTHS = ("part-2011-11.parquet", "part-2011-12.parquet")


def bundled_config(input_path: str, output: Path, **overrides):
    cfg = load_config(str(REPO / "conf" / "online_retail.yaml"))
    cfg["output"]["report"] = False
    cfg["recommend"]["enabled"] = False
    cfg["catalog"]["mode"] = "off"
    cfg["model"]["stability_fits"] = 0
    return validate_config(apply_overrides(cfg, input=input_path, output=str(output), **overrides))


def state_rows(spark, path: str):
    return spark.read.parquet(path).select(*SEGMENT_COLUMNS)


def assert_same_rows(spark, a, b) -> None:
    assert a.count() == b.count()
    assert a.exceptAll(b).count() == 0
    assert b.exceptAll(a).count() == 0


def version_table(root: Path, table: str) -> list[dict]:
    return (
        duckdb.sql(
            f"select * from read_parquet('{root}/{table}/*/*.parquet', hive_partitioning=true) order by version"
        )
        .df()
        .to_dict("records")
    )


@pytest.fixture(scope="module")
def bundled_stream(spark, tmp_path_factory):
    """A model trained on Dec 2010 - Oct 2011 of the bundled data (k = 5), then Nov - Dec 2011 as one Parquet
    file per day in the landing folder, streamed twelve files per micro-batch."""
    tmp = tmp_path_factory.mktemp("stream")
    train, landing = tmp / "train", tmp / "landing"
    train.mkdir()
    landing.mkdir()
    for f in sorted(BUNDLED.glob("part-*.parquet")):
        if f.name not in STREAMED_MONTHS:
            shutil.copy(f, train / f.name)
    days = []
    for name in STREAMED_MONTHS:
        table = pq.read_table(BUNDLED / name)
        day = pc.utf8_slice_codeunits(table["InvoiceDate"], 0, 10)
        for d in sorted(set(day.to_pylist())):
            pq.write_table(table.filter(pc.equal(day, d)), landing / f"{d}.parquet")
            days.append(d)
    cfg = bundled_config(str(train), tmp / "model", k=5)
    manifest = run_segmentation(spark, cfg)
    summary = run_stream(
        spark,
        cfg,
        str(tmp / "model"),
        str(landing),
        str(tmp / "live"),
        str(tmp / "ckpt"),
        available_now=True,
        max_files_per_trigger=12,
    )
    return tmp, cfg, manifest, summary, days


def test_state_equals_the_batch_features_and_score_customers_segments(spark, bundled_stream):
    tmp, cfg, manifest, summary, days = bundled_stream
    assert manifest["snapshot_date"] == "2011-11-01"
    assert summary["as_of_date"] == "2011-12-10"  # the day after the last streamed line, as the batch job
    assert summary["versions"] == 3 and summary["last_batch_id"] == 2  # 34 day files, 12 per micro-batch
    scored = score_customers(
        spark,
        bundled_config(
            f"{tmp}/{{train,landing}}/*.parquet",
            tmp.parent / f"{tmp.name}-scored",
            snapshot_date=summary["as_of_date"],
        ),
        str(tmp / "model"),
    )
    batch = state_rows(spark, f"{scored['output_path']}/segments/snapshot_date=2011-12-10")
    state = state_rows(spark, f"{tmp}/live/customer_state")
    # every feature, score and segment of every customer: exactly the scoring job's on the same lines
    assert_same_rows(spark, state, batch)
    assert state.count() == scored["customers"] > manifest["customers"]  # new customers joined
    rows = duckdb.sql(
        f"select distinct as_of_date, version from read_parquet('{tmp}/live/customer_state/*.parquet')"
    ).fetchall()
    assert [(str(d), v) for d, v in rows] == [("2011-12-10", 3)]  # the date moved every batch: all re-scored


def test_every_streamed_line_is_accepted_or_rejected_with_its_reason(spark, bundled_stream):
    tmp, _, manifest, _, days = bundled_stream
    progress = version_table(tmp / "live", "stream_progress")
    assert [p["kind"] for p in progress] == ["seed"] + ["batch"] * 3
    lines = sum(pq.read_metadata(tmp / "landing" / f"{d}.parquet").num_rows for d in days)
    streamed = sum(pq.read_metadata(BUNDLED / name).num_rows for name in STREAMED_MONTHS)
    batches = progress[1:]
    assert sum(p["input_rows"] for p in batches) == lines == streamed
    for p in batches:
        assert p["input_rows"] == p["accepted_rows"] + p["rejected_rows"]
        assert p["rejected_rows"] == sum(p[f"rejected_{r}"] for r in REJECT_REASONS)
    rejects = spark.read.parquet(str(tmp / "live" / "rejects"))
    by_reason = {r["reject_reason"]: r["count"] for r in rejects.groupBy("reject_reason").count().collect()}
    totals = {r: sum(p[f"rejected_{r}"] for p in batches) for r in REJECT_REASONS}
    assert by_reason == {r: n for r, n in totals.items() if n}
    # the training run's rejects plus the stream's are the whole log's: a copy of a line in an earlier file
    # (or in the training months) is a duplicate here, as in one batch run over everything
    whole = bundled_config(str(BUNDLED / "part-*.parquet"), tmp / "unused")
    from segmentation.sources.read import original_columns, read_transactions
    from segmentation.sources.validate import classify_rows

    raw, inp = read_transactions(spark, whole["input"])
    classified = classify_rows(raw, inp, True, original_columns(raw))
    everything = {
        r["reject_reason"]: r["count"] for r in classified.groupBy("reject_reason").count().collect()
    }
    for reason in ("duplicate", "missing_customer_id", "non_positive_price"):
        assert everything[reason] == manifest["rejected_rows"].get(reason, 0) + by_reason.get(reason, 0)
    assert everything[None] == manifest["accepted_rows"] + sum(p["accepted_rows"] for p in batches)


def test_segment_updates_chain_each_customer_from_the_model_to_the_state(bundled_stream):
    tmp, _, manifest, _, _ = bundled_stream
    seed = dict(
        duckdb.sql(
            f"select customer_id, segment_id from read_parquet('{tmp}/model/segments/*/*.parquet')"
        ).fetchall()
    )
    final = dict(
        duckdb.sql(
            f"select customer_id, segment_id from read_parquet('{tmp}/live/customer_state/*.parquet')"
        ).fetchall()
    )
    updates = version_table(tmp / "live", "segment_updates")
    current = {c: norm(s) for c, s in seed.items()}
    seen = set()
    for u in updates:  # in version order: each row starts where the customer's last one ended
        assert (u["customer_id"], u["version"]) not in seen  # one row per customer and version
        seen.add((u["customer_id"], u["version"]))
        assert norm(u["previous_segment_id"]) == current.get(u["customer_id"])
        assert norm(u["segment_id"]) != norm(u["previous_segment_id"])
        assert u["run_id"] == manifest["run_id"]
        current[u["customer_id"]] = norm(u["segment_id"])
    # a customer who is new and excluded (say, only returns) has no segment before or after: no row
    assert {c: s for c, s in current.items() if s is not None} == {
        c: norm(s) for c, s in final.items() if norm(s) is not None
    }
    moved = {c for c, s in final.items() if norm(s) != norm(seed.get(c))}
    assert len(moved) > 100
    assert moved <= {u["customer_id"] for u in updates}


def norm(value):
    """A missing segment id as None (pandas reads a null int as NaN)."""
    return None if value is None or value != value else int(value)


def copy_stream(tmp: Path, name: str) -> Path:
    target = tmp.parent / f"{tmp.name}-{name}"
    for part in ("live", "ckpt"):
        shutil.copytree(tmp / part, target / part)
    return target


def test_a_replayed_batch_and_a_file_delivered_twice_change_nothing(spark, bundled_stream, caplog):
    tmp, cfg, _, summary, days = bundled_stream
    copy = copy_stream(tmp, "replay")
    # Spark's own commit of the last micro-batch lost (a crash after the state was committed): Spark replays
    # batch 2 on restart
    for name in ("2", ".2.crc"):
        (copy / "ckpt" / "commits" / name).unlink(missing_ok=True)
    before = state_rows(spark, f"{copy}/live/customer_state").persist()
    before.count()

    def resume():
        return run_stream(
            spark, cfg, str(tmp / "model"), str(tmp / "landing"), str(copy / "live"), str(copy / "ckpt"),
            available_now=True,
        )  # fmt: skip

    with caplog.at_level("INFO", logger="segmentation.stream"):
        result = resume()
    assert "micro-batch 2 is in version 3 already: replay skipped" in caplog.text
    assert result["version"] == 3 and result["versions"] == 0
    assert_same_rows(spark, state_rows(spark, f"{copy}/live/customer_state"), before)

    # a file that came before arrives again under a new name: every line a duplicate (or the reject it was)
    shutil.copy(tmp / "landing" / f"{days[3]}.parquet", tmp / "landing" / f"{days[3]}-again.parquet")
    try:
        result = resume()
    finally:
        (tmp / "landing" / f"{days[3]}-again.parquet").unlink()
    progress = version_table(copy / "live", "stream_progress")[-1]
    original = pq.read_metadata(tmp / "landing" / f"{days[3]}.parquet").num_rows
    assert result["version"] == 4 and progress["kind"] == "batch"
    assert progress["input_rows"] == original and progress["accepted_rows"] == 0
    assert progress["customers_updated"] == 0 and progress["segment_changes"] == 0
    assert progress["rejected_duplicate"] > 0
    assert_same_rows(spark, state_rows(spark, f"{copy}/live/customer_state"), before)
    before.unpersist()


def test_the_clock_moves_customers_without_a_new_line(spark, bundled_stream):
    tmp, cfg, _, _, _ = bundled_stream
    copy = copy_stream(tmp, "clock")
    result = run_stream(  # every file read already: no micro-batch, only the tick
        spark,
        cfg,
        str(tmp / "model"),
        str(tmp / "landing"),
        str(copy / "live"),
        str(copy / "ckpt"),
        available_now=True,
        as_of="2012-03-01",
    )
    assert result["as_of_date"] == "2012-03-01" and result["versions"] == 1
    tick = version_table(copy / "live", "stream_progress")[-1]
    assert (tick["kind"], tick["input_rows"], norm(tick["batch_id"])) == ("tick", 0, None)
    scored = score_customers(
        spark,
        bundled_config(
            f"{tmp}/{{train,landing}}/*.parquet",
            tmp.parent / f"{tmp.name}-scored-later",
            snapshot_date="2012-03-01",
        ),
        str(tmp / "model"),
    )
    assert_same_rows(
        spark,
        state_rows(spark, f"{copy}/live/customer_state"),
        state_rows(spark, f"{scored['output_path']}/segments/snapshot_date=2012-03-01"),
    )
    moved = duckdb.sql(
        f"select count(*), count(distinct customer_id), min(event_time), max(event_time) "
        f"from read_parquet('{copy}/live/segment_updates/version=4/*.parquet')"
    ).fetchall()[0]
    assert moved[0] == moved[1] == tick["segment_changes"] > 0
    assert str(moved[2]) == str(moved[3]) == "2012-03-01 00:00:00"  # moved by the clock, not by a line


def test_a_model_snapshot_that_does_not_exist_is_one_clear_line(spark, bundled_stream):
    tmp, cfg, _, _, _ = bundled_stream
    with pytest.raises(InputError) as err:
        run_stream(
            spark,
            cfg,
            str(tmp / "model"),
            str(tmp / "landing"),
            str(tmp / "elsewhere"),
            str(tmp / "ck2"),
            model_snapshot="2011-06-01",
            available_now=True,
        )
    assert str(err.value) == (
        f"no published model for snapshot 2011-06-01 under {tmp / 'model'} (available: 2011-11-01)"
    )
    assert not (tmp / "elsewhere").exists()


#: Lines the landing gets besides the synthetic customers' new orders: a line of the wrong width, a line
#: without a customer, one with a timestamp that is none, one with a zero price.
BAD_LINES = (
    "1,2,3\n"
    "200001,X,ITEM,1,2011-07-02 10:00:00,1.0,,United Kingdom\n"
    "200002,X,ITEM,1,yesterday,1.0,1001.0,United Kingdom\n"
    "200003,X,ITEM,1,2011-07-02 11:00:00,0,1001.0,United Kingdom\n"
)


@pytest.fixture(scope="module")
def synthetic_stream(spark, tmp_path_factory):
    """The synthetic log's model (k = 3), a landing folder of new orders in six CSV files (one with rejects,
    one where a lapsed customer comes back with big orders), and the stream's result read in one go."""
    tmp = tmp_path_factory.mktemp("stream-cli")
    log_path = synthetic.write_csv(tmp / "in" / "log.csv", synthetic.transactions(), synthetic.REJECT_LINES)
    cfg = synthetic.job_config(log_path, tmp / "model")
    run_segmentation(spark, cfg)
    later = [r for r in synthetic.transactions(shift_days=30) if r[2][:10] >= synthetic.END.isoformat()]
    landing = tmp / "landing"
    days = sorted({r[2][:10] for r in later})
    chunks = [days[i::5] for i in range(5)]
    for i, chunk in enumerate(chunks):
        rows = [r for r in later if r[2][:10] in chunk]
        synthetic.write_csv(landing / f"part-{i}.csv", rows, BAD_LINES if i == 2 else "")
    comeback = [(str(300000 + o), "3000", f"2011-07-2{o} 12:00:00", 50, 80.0) for o in range(6)]
    synthetic.write_csv(landing / "part-5.csv", comeback)
    config = tmp / "stream.yaml"
    config.write_text(f"input:\n  path: {log_path}\n  format: csv\nmodel:\n  k: 3\n", encoding="utf-8")
    reference = run_stream(
        spark,
        cfg,
        str(tmp / "model"),
        str(landing),
        str(tmp / "ref"),
        str(tmp / "ref-ckpt"),
        available_now=True,
    )
    return tmp, cfg, config, reference


def stream_command(tmp: Path, config: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.stream_segments",
        "--model-path",
        str(tmp / "model"),
        "--landing",
        str(tmp / "landing"),
        "--output",
        str(tmp / "live"),
        "--checkpoint",
        str(tmp / "ckpt"),
        "--config",
        str(config),
        *options,
    ]


def wait_for(predicate, proc, timeout=120.0) -> None:
    started = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - started < timeout
        time.sleep(0.1)


def commits(root: Path) -> int:
    folder = root / "_state" / "commits"
    return len(list(folder.glob("*.json"))) if folder.exists() else 0


def test_kill_9_then_sigterm_then_catch_up_counts_every_line_once(spark, synthetic_stream):
    tmp, _, config, reference = synthetic_stream
    live = tmp / "live"
    # a stream's JVM lives for minutes: the full JIT (the suite's short jobs run with C1 only)
    env = {k: v for k, v in os.environ.items() if k != "JDK_JAVA_OPTIONS"}
    options = ("--trigger-seconds", "1", "--max-files-per-trigger", "1")
    with open(tmp / "a.log", "w") as log_a:
        proc = subprocess.Popen(
            stream_command(tmp, config, *options), cwd=REPO, env=env, stdout=log_a, stderr=log_a
        )
        wait_for(lambda: commits(live) >= 3, proc)  # the seed and two micro-batches committed
        time.sleep(0.8)  # somewhere in the third
        proc.kill()
        proc.wait()
    done = commits(live)
    with open(tmp / "b.log", "w") as log_b:
        proc = subprocess.Popen(
            stream_command(tmp, config, *options), cwd=REPO, env=env, stdout=log_b, stderr=log_b
        )
        wait_for(lambda: commits(live) > done, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert "Stream with the model of 2011-06-28" in (tmp / "b.log").read_text()
    finished = subprocess.run(
        stream_command(tmp, config, "--available-now"), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    assert f"as of {reference['as_of_date']}" in finished.stdout

    columns = [*SEGMENT_COLUMNS, "as_of_date"]
    assert_same_rows(
        spark,
        spark.read.parquet(str(live / "customer_state")).select(*columns),
        spark.read.parquet(str(tmp / "ref" / "customer_state")).select(*columns),
    )
    progress = version_table(live, "stream_progress")
    lines = sum(len(p.read_text().splitlines()) - 1 for p in (tmp / "landing").glob("*.csv"))
    assert sum(p["input_rows"] for p in progress) == lines  # the killed batch counted once
    assert [p["version"] for p in progress] == list(range(len(progress)))
    assert sum(p["rejected_rows"] for p in progress) == 4


def test_malformed_lines_go_to_rejects_and_a_comeback_is_one_update(synthetic_stream):
    tmp, _, _, _ = synthetic_stream
    rejects = duckdb.sql(
        f"select reject_reason, raw_line, CustomerID from read_parquet('{tmp}/ref/rejects/*/*.parquet') "
        "order by reject_reason"
    ).fetchall()
    assert rejects == [
        ("invalid_timestamp", None, "1001.0"),
        ("malformed_row", "1,2,3", None),
        ("missing_customer_id", None, None),
        ("non_positive_price", None, "1001.0"),
    ]
    seed = dict(
        duckdb.sql(
            f"select customer_id, segment_name from read_parquet('{tmp}/model/segments/*/*.parquet')"
        ).fetchall()
    )
    updates = duckdb.sql(
        f"select previous_segment_name, segment_name from read_parquet('{tmp}/ref/segment_updates/*/*.parquet') "
        "where customer_id = '3000'"
    ).fetchall()
    final = duckdb.sql(
        f"select segment_name, frequency from read_parquet('{tmp}/ref/customer_state/*.parquet') "
        "where customer_id = '3000'"
    ).fetchall()
    assert updates == [(seed["3000"], final[0][0])]  # one row: from the model's segment to the new one
    assert final[0][1] == 7  # one order before, six in the landing


def test_a_message_source_decodes_json_as_kafka_values_are(spark, synthetic_stream):
    """`run_stream(source=...)`: the landing's lines as JSON messages of a text source (Kafka's `value`): the
    same state as the CSV files, and a message that is no JSON object is a malformed_row with its text."""
    import csv

    from segmentation.sources.stream import json_messages

    tmp, cfg, _, reference = synthetic_stream
    messages = tmp / "messages"
    messages.mkdir()
    with open(messages / "part-0.txt", "w", encoding="utf-8") as out:
        for path in sorted((tmp / "landing").glob("*.csv")):
            for row in csv.DictReader(path.open(encoding="utf-8")):
                if None in row or None in row.values():  # the line of the wrong width: malformed as CSV
                    continue
                out.write(json.dumps({k: (v if v != "" else None) for k, v in row.items()}) + "\n")
        out.write("not a json object\n")

    def text_source(session, schema):
        return json_messages(session.readStream.text(str(messages)), schema)

    result = run_stream(
        spark,
        cfg,
        str(tmp / "model"),
        str(messages),
        str(tmp / "from-messages"),
        str(tmp / "messages-ckpt"),
        available_now=True,
        source=text_source,
    )
    assert result["as_of_date"] == reference["as_of_date"]
    columns = [*SEGMENT_COLUMNS, "as_of_date"]
    assert_same_rows(
        spark,
        spark.read.parquet(str(tmp / "from-messages" / "customer_state")).select(*columns),
        spark.read.parquet(str(tmp / "ref" / "customer_state")).select(*columns),
    )
    rejects = duckdb.sql(
        f"select reject_reason, raw_line from read_parquet('{tmp}/from-messages/rejects/*/*.parquet') "
        "order by reject_reason"
    ).fetchall()
    assert rejects == [
        ("invalid_timestamp", None),
        ("malformed_row", "not a json object"),
        ("missing_customer_id", None),
        ("non_positive_price", None),
    ]


def test_an_output_refuses_another_checkpoint(spark, bundled_stream):
    """A new checkpoint on an old state would read every file again: one line, nothing read."""
    tmp, cfg, _, summary, _ = bundled_stream
    with pytest.raises(InputError) as err:
        run_stream(
            spark, cfg, str(tmp / "model"), str(tmp / "landing"), str(tmp / "live"), str(tmp / "new-ckpt"),
            available_now=True,
        )  # fmt: skip
    known = json.loads((tmp / "ckpt" / "metadata").read_text())["id"]
    assert str(err.value) == (
        f"the stream under {tmp / 'live'} belongs to the checkpoint of query {known}; {tmp / 'new-ckpt'} is new: "
        "give the stream's own --checkpoint, or a new --output to start over"
    )
    assert not (tmp / "new-ckpt").exists()
    assert (
        json.loads((tmp / "live" / "_state" / "commits" / "3.json").read_text())["version"]
        == summary["version"]
    )


def test_the_order_rows_kept_in_memory_are_the_stores_as_versions_fold(spark, bundled_stream):
    tmp = bundled_stream[0]
    store = StreamStore(spark, str(tmp / "live"))
    last = store.last_commit().version
    assert last >= 3
    memory = OrdersInMemory(store, fold_every=2)
    assert_same_rows(spark, memory.table(0), store.state_table("orders", 0))
    parts = []
    for version in range(1, last + 1):
        memory.add(version, store.version_rows("orders", version).persist())
        parts.append(len(memory.parts))
        assert memory.version == version
    # a part per version, folded into one when there are more than two
    assert parts[:3] == [2, 1, 2]
    assert_same_rows(spark, memory.table(last), store.state_table("orders", last))
    # rows that do not follow the version held are not kept: the next read goes back to the store
    memory.add(last + 2, store.version_rows("orders", last).persist())
    assert (memory.version, memory.parts) == (None, [])
    assert_same_rows(spark, memory.table(last - 1), store.state_table("orders", last - 1))
    memory.release()
