"""The job on a real Spark standalone cluster on this machine: two workers, authentication on, 127.0.0.1 only.

A module-scoped cluster (scripts/cluster.sh, free ports, a temporary run dir) is always stopped at the end,
even when a test fails, and the teardown checks that none of its processes is left. Jobs go through
scripts/submit.sh (client mode, library shipped with --py-files). The one cluster run of the job has an executor
killed while it aggregates, and is compared with a local-mode run of the same input and seed. Input: the first
DAYS daily CSVs of the Online Retail data, k = 2..4.

Every JVM here runs with C1 only (JDK_JAVA_OPTIONS=-XX:TieredStopAtLevel=1): these JVMs live for a minute, and
on two cores C2 compilation costs more CPU than it saves (a cluster run takes ~1 min instead of ~1.5). A
refused submit waits ~60 s for the master (3 tries 20 s apart, fixed in Spark), so the refused submits and the
local reference start first, in the background, and overlap the cluster run. The module takes about 3 minutes
on an idle 2-core machine (more when other work shares the cores).

Needs Java 17+ and the real data at ../shared/data/online_retail/by-day.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import ONLINE_RETAIL_CSV, REPO

CLUSTER_SH = REPO / "scripts" / "cluster.sh"
SUBMIT_SH = REPO / "scripts" / "submit.sh"
PROBE = REPO / "tests" / "cluster_probe.py"
DAYS = 20
SEED = "7"
JIT = "-XX:TieredStopAtLevel=1"
JOB_TIMEOUT = 300
REL_TOL = 1e-6

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not ONLINE_RETAIL_CSV.is_dir(), reason=f"real data not found at {ONLINE_RETAIL_CSV}"),
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET")}
    env["JDK_JAVA_OPTIONS"] = JIT
    env.update(extra)
    return env


class Job:
    """A subprocess in its own session, output to files that can be read while it runs."""

    def __init__(self, name: str, cmd: list[str], folder: Path, env: dict[str, str]):
        self.name, self.folder = name, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = folder / f"{name}.stdout", folder / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(c) for c in cmd],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        """stdout + stderr (spark-submit sends the Python driver's stderr to its stdout)."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = JOB_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} still running after {timeout} s; output:\n{self.output()[-3000:]}")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited ({self.proc.returncode}) before {text!r}:\n{self.output()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {text!r} after {timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """End this job's process group (the session it was started in), if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


# --- processes (Linux /proc) --------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, start time) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), fields[19]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))):
            children.setdefault(st[0], []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _listening_addresses(pids: list[int]) -> dict[str, str]:
    """'address:port' -> pid for every TCP socket in LISTEN state owned by one of the pids."""
    inodes = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = str(pid)
        except (FileNotFoundError, PermissionError):
            continue
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                address, port = local.split(":")
                found[f"{_ip(address)}:{int(port, 16)}"] = inodes[inode]
    return found


def assert_loopback_only(listening: dict[str, str], at_least: int) -> None:
    assert len(listening) >= at_least, listening
    assert all(a.startswith(("127.0.0.1:", "::ffff:127.0.0.1:")) for a in listening), listening


def _ip(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # /proc/net/tcp6: four little-endian words
    ip6 = b"".join(words)
    if ip6[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in ip6[12:])
    return ip6.hex()


# --- the cluster --------------------------------------------------------------------------------------------
@dataclass
class Cluster:
    run_dir: Path
    master_url: str
    ui_url: str
    pyfiles: Path
    jobs: list[Job] = field(default_factory=list)

    def pid(self, daemon: str) -> int:
        return int((self.run_dir / "pids" / f"{daemon}.pid").read_text().split()[0])

    def state(self) -> dict:
        with urllib.request.urlopen(self.ui_url + "/json/", timeout=5) as response:
            return json.load(response)

    def submit(
        self, name: str, args: list[str], folder: Path, submit_opts: tuple[str, ...] = (), **env: str
    ) -> Job:
        cmd = [str(SUBMIT_SH), *submit_opts, "--", *args]
        job = Job(name, cmd, folder, _env(CLUSTER_RUN_DIR=str(self.run_dir), **env))
        self.jobs.append(job)
        return job


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cluster")
    # two workers of 1 core and 2 GB, every port picked free (0)
    options = [
        *("--workers", "2", "--cores", "1", "--memory", "2g"),
        *("--master-port", "0", "--ui-port", "0", "--worker-ui-port", "0"),
    ]
    start = [str(CLUSTER_SH), "start", "--run-dir", str(run_dir), *options]
    family: dict[int, str] = {}
    try:
        result = subprocess.run(start, capture_output=True, text=True, timeout=240, env=_env())
        assert result.returncode == 0, f"cluster did not start:\n{result.stdout}\n{result.stderr}"
        env = _read_env(run_dir / "cluster.env")
        dist = tmp_path_factory.mktemp("dist")
        package = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "package.py"), "--dist", str(dist)],
            capture_output=True,
            text=True,
        )
        assert package.returncode == 0, package.stderr
        yield Cluster(run_dir, env["MASTER_URL"], env["MASTER_UI_URL"], dist / "segmentation-pyfiles.zip")
    finally:
        # what the cluster runs now (daemons, executors, Python workers): all of it must be gone after stop
        for pidfile in (run_dir / "pids").glob("*.pid"):
            pid = int(pidfile.read_text().split()[0])
            for p in [pid, *_descendants(pid)]:
                if st := _stat(p):
                    family[p] = st[1]
        stop = subprocess.run(
            [str(CLUSTER_SH), "stop", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=120
        )
    left = {p: _cmdline(p)[:120] for p, started in family.items() if (st := _stat(p)) and st[1] == started}
    for p in left:  # never leave a process behind, even when stop is broken
        os.kill(p, signal.SIGKILL)
    assert stop.returncode == 0, stop.stderr
    assert not left, f"cluster.sh stop left processes running: {left}"
    assert not list((run_dir / "pids").glob("*.pid")) and not (run_dir / "secret").exists()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("input")
    for csv in sorted(ONLINE_RETAIL_CSV.glob("*.csv"))[:DAYS]:
        shutil.copy(csv, folder / csv.name)
    return folder


def job_args(inputs: Path, output: Path, catalog: bool = False) -> list[str]:
    """The Online Retail preset; stability fits and the report are off (tested elsewhere), to keep runs short.
    The catalog is off unless `catalog`: then the preset's catalog section goes, so the job picks the mode
    from its master (a cluster's: `session`)."""
    config = inputs.parent / f"cluster-test{'-catalog' if catalog else ''}.yaml"
    if not config.exists():
        preset = yaml.safe_load((REPO / "conf" / "online_retail.yaml").read_text())
        preset.setdefault("model", {})["stability_fits"] = 0
        if catalog:
            del preset["catalog"]
        else:
            preset["catalog"] = {"enabled": False}
        preset["output"]["report"] = False
        config.write_text(yaml.safe_dump(preset))
    return [
        *("--config", str(config), "--input", str(inputs), "--input-format", "csv", "--output", str(output)),
        *("--k-min", "2", "--k-max", "4", "--seed", SEED),
    ]


@pytest.fixture(scope="module")
def local_run(inputs, tmp_path_factory):
    """The local-mode reference, started at once in the background (collect it with .wait())."""
    folder = tmp_path_factory.mktemp("local")
    cmd = [sys.executable, "-m", "jobs.segment_customers", *job_args(inputs, folder / "out")]
    job = Job("local", cmd, folder, _env())
    job.out = folder / "out"
    yield job
    job.stop()


@pytest.fixture(scope="module")
def cluster_run(cluster, inputs, tmp_path_factory):
    """The cluster run (submit.sh packages the library itself here), with an executor killed while the
    aggregation to customers runs: the job must recover and still give the local run's outputs. One run shows
    both, which saves a cluster run of about a minute and a half (the suite's 15-minute budget)."""
    folder = tmp_path_factory.mktemp("cluster-run")
    apps_before = _app_ids(cluster)
    # the "cluster's own metastore" (a platform's Hive metastore or Glue): the session is given it by
    # spark-submit, and the job registers its tables there (catalog.mode session, chosen from the master)
    metastore = folder / "platform-metastore"
    hive = (
        *("--conf", "spark.sql.catalogImplementation=hive"),
        *(
            "--conf",
            f"spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName={metastore};create=true",
        ),
        *("--conf", f"spark.sql.warehouse.dir={folder / 'platform-warehouse'}"),
        *("--driver-java-options", f"-Dderby.stream.error.file={folder / 'derby.log'}"),
    )
    job = cluster.submit("cluster", job_args(inputs, folder / "out", catalog=True), folder, submit_opts=hive)
    job.metastore = metastore
    try:
        job.wait_for("stage features: started", timeout=180)  # the aggregation to customers is running
        (app,) = cluster.state()["activeapps"]
        worker = cluster.pid("worker-1")
        job.killed = [
            p
            for p in _descendants(worker)
            if "CoarseGrainedExecutorBackend" in (cmd := _cmdline(p)) and f"--app-id {app['id']} " in cmd
        ]
        # while it runs: the driver (and its UI) and every executor listen on the loopback interface only
        running = [job.proc.pid, *_descendants(job.proc.pid)]
        running += [p for w in ("worker-1", "worker-2") for p in _descendants(cluster.pid(w))]
        job.listening = _listening_addresses(running)
        if len(job.killed) == 1:
            os.kill(job.killed[0], signal.SIGKILL)
        job.running_at_kill = job.proc.poll() is None
        job.aggregated_at_kill = "stage features: done" in job.output()
        rc = job.wait()
    finally:
        job.stop()
    assert rc == 0, f"cluster run failed ({rc}):\n{job.output()[-4000:]}"
    (job.app_id,) = _app_ids(cluster) - apps_before
    assert job.app_id == app["id"]
    job.out = folder / "out"
    return job


# --- the outputs --------------------------------------------------------------------------------------------
def _table(out: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(out / name).drop(columns=["run_id"], errors="ignore")
    df["snapshot_date"] = df["snapshot_date"].astype(str)
    for column in df.columns:  # list columns (e.g. elbow.cluster_sizes) as tuples: sortable and comparable
        if df[column].map(lambda v: isinstance(v, np.ndarray)).any():
            df[column] = df[column].map(lambda v: tuple(v.tolist()) if isinstance(v, np.ndarray) else v)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def _tables(out: Path) -> list[str]:
    """The published Parquet tables (not the model, the manifest or file folders such as the report)."""
    return sorted(
        p.name
        for p in out.iterdir()
        if p.name not in ("models", "manifests") and not p.name.startswith("_") and any(p.rglob("*.parquet"))
    )


def _files(out: Path) -> dict[str, list[str]]:
    """The other published folders (models, manifests, reports, ...): which files each holds."""
    return {
        p.name: sorted(f.name for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "part-")))
        for p in out.iterdir()
        if p.is_dir() and p.name not in _tables(out) and not p.name.startswith("_")  # not _catalog, _staging
    }


def _manifest(out: Path) -> dict:
    (path,) = out.glob("manifests/snapshot_date=*/manifest.json")
    return json.loads(path.read_text())


def _assignment(out: Path) -> dict[str, int | None]:
    segments = pd.read_parquet(out / "segments", columns=["customer_id", "segment_id"])
    return {
        r.customer_id: None if pd.isna(r.segment_id) else int(r.segment_id) for r in segments.itertuples()
    }


def assert_same_outputs(expected: Path, actual: Path) -> None:
    """Same customer -> segment, same elbow (WCSS within 1e-6 relative), and every published table equal."""
    assert _assignment(actual) == _assignment(expected)
    elbow_e, elbow_a = _table(expected, "elbow"), _table(actual, "elbow")
    assert list(elbow_a.k) == list(elbow_e.k) and list(elbow_a.chosen) == list(elbow_e.chosen)
    for k, wcss_e, wcss_a in zip(elbow_e.k, elbow_e.wcss, elbow_a.wcss, strict=True):
        assert math.isclose(wcss_a, wcss_e, rel_tol=REL_TOL), f"k={k}: WCSS {wcss_a} != {wcss_e}"
    assert _tables(actual) == _tables(expected)
    assert _files(actual) == _files(expected)
    for name in _tables(expected):
        pd.testing.assert_frame_equal(
            _table(actual, name), _table(expected, name), check_exact=False, rtol=REL_TOL
        )
    m_e, m_a = _manifest(expected), _manifest(actual)
    keys = (
        *(
            "snapshot_date",
            "input_rows",
            "accepted_rows",
            "rejected_rows",
            "customers",
            "clustered_customers",
        ),
        *("excluded_customers", "k_candidates", "chosen_k", "segments"),
    )
    assert {k: m_a.get(k) for k in keys} == {k: m_e.get(k) for k in keys}
    # the fitted model: same k, same KMeans cluster -> segment map, same names
    (map_e,), (map_a,) = expected.glob("models/*/segment_map.json"), actual.glob("models/*/segment_map.json")
    keys = ("k", "cluster_to_segment", "segment_names")
    segment_map_e, segment_map_a = json.loads(map_e.read_text()), json.loads(map_a.read_text())
    assert {k: segment_map_a.get(k) for k in keys} == {k: segment_map_e.get(k) for k in keys}


def _app_ids(cluster: Cluster) -> set[str]:
    state = cluster.state()
    return {app["id"] for app in state["activeapps"] + state["completedapps"]}


@pytest.fixture(scope="module")
def refused_submits(cluster, inputs, tmp_path_factory):
    """Two submits the master must refuse: without the secret (plain spark-submit) and with a wrong one."""
    folder = tmp_path_factory.mktemp("refused")
    spark_submit = Path(_read_env(cluster.run_dir / "cluster.env")["SPARK_HOME"]) / "bin" / "spark-submit"
    no_secret = Job(
        "no-secret",
        [
            *(spark_submit, "--master", cluster.master_url, "--py-files", cluster.pyfiles),
            *("--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.driver.host=127.0.0.1"),
            *("--conf", f"spark.pyspark.driver.python={sys.executable}"),
            *(REPO / "jobs" / "segment_customers.py", *job_args(inputs, folder / "no-secret-out")),
        ],
        folder,
        _env(SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(REPO / "conf")),
    )
    no_secret.refused = True
    cluster.jobs.append(no_secret)
    wrong = folder / "wrong-secret"
    wrong.write_text("0" * 64 + "\n")
    wrong.chmod(0o600)
    wrong_secret = cluster.submit(
        "wrong-secret",
        job_args(inputs, folder / "wrong-secret-out"),
        folder,
        SPARK_AUTH_SECRET_FILE=str(wrong),
        SUBMIT_PYFILES=str(cluster.pyfiles),
    )
    wrong_secret.refused = True
    yield folder, [no_secret, wrong_secret]
    no_secret.stop()
    wrong_secret.stop()


@pytest.fixture(scope="module", autouse=True)
def background_jobs(refused_submits, local_run):
    """Started before the first test: the refused submits spend ~60 s waiting for the master and the local
    reference needs no cluster, so both overlap the cluster runs instead of adding to the module's time."""


# --- the tests ----------------------------------------------------------------------------------------------
def test_cluster_run_equals_local_run(cluster, local_run, cluster_run):
    assert local_run.wait() == 0, local_run.output()[-4000:]
    assert_same_outputs(local_run.out, cluster_run.out)
    # catalog.mode session (the master is not local): the tables are in the platform's metastore, with the
    # snapshot's partition; no Derby of the job's own under the output
    registered = next(line for line in cluster_run.output().splitlines() if line.startswith("  catalog: "))
    assert registered.startswith("  catalog: segmentation: segments (1), profiles (1), rfm_profiles (1)")
    assert (cluster_run.metastore / "service.properties").is_file()
    assert not (cluster_run.out / "_catalog").exists()
    # it really ran on the cluster: executors of the application on both workers
    for worker in ("worker-1", "worker-2"):
        app_dir = cluster.run_dir / "work" / worker / cluster_run.app_id
        assert app_dir.is_dir(), f"no executor of {cluster_run.app_id} on {worker}"


def test_killed_executor_does_not_change_the_outputs(cluster, local_run, cluster_run):
    assert len(cluster_run.killed) == 1, (
        f"executors of {cluster_run.app_id} under worker-1: {cluster_run.killed}"
    )
    assert cluster_run.running_at_kill, "the job finished before the executor could be killed"
    assert not cluster_run.aggregated_at_kill, "the kill came after the aggregation"
    assert_loopback_only(cluster_run.listening, at_least=4)
    assert "Lost executor" in cluster_run.output(), "the driver did not notice the lost executor"
    # the outputs are the local run's (test_cluster_run_equals_local_run), and the worker started a
    # replacement executor for the application
    assert local_run.wait() == 0, local_run.output()[-4000:]
    assert_same_outputs(local_run.out, cluster_run.out)
    assert len(list((cluster.run_dir / "work" / "worker-1" / cluster_run.app_id).iterdir())) >= 2


def test_executors_import_the_library_from_the_shipped_zip(cluster, tmp_path):
    # a Python that has pyspark only through Spark's own zip and cannot import the project by itself
    executor_python = getattr(sys, "_base_executable", sys.executable)
    bare = subprocess.run([executor_python, "-c", "import segmentation"], cwd=tmp_path, capture_output=True)
    extra = {
        "SUBMIT_APP": str(PROBE),
        "EXECUTOR_PYTHON": executor_python,
        "SUBMIT_PYFILES": str(cluster.pyfiles),
    }
    job = cluster.submit("probe", [], tmp_path, **extra)
    rc = job.wait()
    output = job.output()
    assert rc == 0, output[-4000:]
    (line,) = [line for line in output.splitlines() if line.startswith("PROBE ")]
    tasks = json.loads(line.removeprefix("PROBE "))
    assert len(tasks) == 4
    for task in tasks:
        assert task["python"] == executor_python
        for module in ("segmentation", "errors", "jobs"):
            assert "segmentation-pyfiles.zip/" in task[module], task
            assert not task[module].startswith(str(REPO) + "/segmentation"), task
        assert Path(task["cwd"]).is_relative_to(cluster.run_dir / "work"), task
    workers = {Path(t["cwd"]).relative_to(cluster.run_dir / "work").parts[0] for t in tasks}
    assert workers == {"worker-1", "worker-2"}
    if executor_python != sys.executable:
        assert bare.returncode != 0, "the executor Python imports segmentation without the zip"


def test_submit_without_the_secret_is_refused(cluster, refused_submits):
    folder, jobs = refused_submits
    results = {job.name: (job.wait(timeout=240), job.output()) for job in jobs}
    master_address = cluster.master_url.removeprefix("spark://")
    for name, (rc, output) in results.items():
        assert rc != 0, f"{name}: the submit succeeded"
        assert f"Failed to connect to master {master_address}" in output, output[-3000:]
        assert "All masters are unresponsive! Giving up." in output, output[-3000:]
        assert "Published snapshot" not in output
        assert not list((folder / f"{name}-out").rglob("*.parquet"))
    # without the secret the client does not speak the auth protocol; with a wrong one the handshake fails
    assert "Expected SaslMessage" in (cluster.run_dir / "logs" / "master.log").read_text()
    assert "Exception while bootstrapping client" in results["wrong-secret"][1]
    # the master registered one application per accepted submit, none for the refused ones
    accepted = [job for job in cluster.jobs if not getattr(job, "refused", False)]
    assert all(job.proc.poll() is not None for job in accepted)
    assert len(_app_ids(cluster)) == len(accepted)


def test_loopback_only_secret_private_and_never_logged(cluster):
    run_dir = cluster.run_dir
    secret = (run_dir / "secret").read_text().strip()
    assert len(secret) == 64 and int(secret, 16) > 0
    for private in (run_dir / "secret", run_dir / "conf" / "daemon.properties"):
        assert private.stat().st_mode & 0o777 == 0o600, private
    assert (run_dir / "conf").stat().st_mode & 0o777 == 0o700

    daemons = [cluster.pid(d) for d in ("master", "worker-1", "worker-2")]
    family = [p for d in daemons for p in [d, *_descendants(d)]]
    assert_loopback_only(_listening_addresses(family), at_least=6)  # master and workers: RPC + UI each
    status = subprocess.run(
        [str(CLUSTER_SH), "status", "--run-dir", str(run_dir)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "2 alive worker(s)" in status.stdout, status.stdout + status.stderr

    # not in a log, an executor's stdout/stderr, a job's output, a command line or a daemon's environment
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.name not in ("secret", "daemon.properties")]
    files += [p for job in cluster.jobs for p in (job.stdout_path, job.stderr_path)]
    assert any(p.name == "stderr" for p in files), "no executor logs found"
    leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
    leaks += [f"cmdline of {p}" for p in family if secret in _cmdline(p)]
    leaks += [
        f"environment of {p}" for p in daemons if secret.encode() in Path(f"/proc/{p}/environ").read_bytes()
    ]
    assert not leaks, f"the secret leaked into: {leaks}"
