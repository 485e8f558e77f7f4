#!/usr/bin/env bash
# Submit the segmentation job to a Spark standalone master (spark://HOST:PORT) with authentication on; the driver
# runs here (client mode), the executors on the cluster's workers.
#
#   scripts/submit.sh [SPARK-SUBMIT OPTIONS --] JOB OPTIONS
#
#   scripts/submit.sh --input data/by-day --input-format csv --output /tmp/segments --k-min 2 --k-max 4
#   scripts/submit.sh --conf spark.executor.memory=2g -- --config conf/online_retail.yaml --output /shared/out
#
# Master: SPARK_MASTER_URL, else the cluster of scripts/cluster.sh (RUN_DIR/cluster.env, RUN_DIR from
# CLUSTER_RUN_DIR, default run/cluster). Secret: SPARK_AUTH_SECRET_FILE, else RUN_DIR/secret; the file must not
# be readable by group or others. Driver Python: PYTHON (default .venv/bin/python); executor Python:
# EXECUTOR_PYTHON (default: the driver's; on a real cluster the path of Python 3.10+ on the nodes).
# The library goes to the executors as dist/segmentation-pyfiles.zip (--py-files), rebuilt on every submit; set
# SUBMIT_PYFILES to ship a prebuilt one. The job's Spark settings (conf/spark-defaults.conf) and the auth settings
# go to spark-submit in a private properties file (mode 600, removed on exit): the secret never appears on a
# command line (ps) or in a log. Inputs and the output must be paths every node can read/write (same machine,
# NFS, HDFS, S3): pass --input explicitly, the bundled sample data is not shipped to the executors.
# SUBMIT_APP runs another entry point with the same settings (tests/cluster_probe.py does). YARN and
# Kubernetes: see docs/cluster.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "submit.sh: error: $*" >&2; exit 2; }

submit_opts=()
job_args=("$@")
for ((i = 0; i < $#; i++)); do
  if [[ "${job_args[$i]}" == "--" ]]; then
    submit_opts=("${job_args[@]:0:$i}")
    job_args=("${job_args[@]:$((i + 1))}")
    break
  fi
done

if [[ -n "${PYTHON:-}" ]]; then DRIVER_PYTHON="$PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then DRIVER_PYTHON="$REPO/.venv/bin/python"
else DRIVER_PYTHON="$(command -v python3)"; fi
EXECUTOR_PYTHON="${EXECUTOR_PYTHON:-$DRIVER_PYTHON}"

RUN_DIR="${CLUSTER_RUN_DIR:-$REPO/run/cluster}"
cluster_env() {
  if [[ -f "$RUN_DIR/cluster.env" ]]; then grep "^$1=" "$RUN_DIR/cluster.env" | cut -d= -f2- || true; fi
}
MASTER="${SPARK_MASTER_URL:-$(cluster_env MASTER_URL)}"
[[ -n "$MASTER" ]] || die "no master: set SPARK_MASTER_URL=spark://HOST:7077 or start one with scripts/cluster.sh start"
[[ "$MASTER" == spark://* ]] || die "master must be spark://HOST:PORT, got '$MASTER'; YARN and Kubernetes: docs/cluster.md"

if [[ -z "${SPARK_AUTH_SECRET_FILE:-}" && "$MASTER" != "$(cluster_env MASTER_URL)" ]]; then
  die "set SPARK_AUTH_SECRET_FILE to the secret of $MASTER (the secret in $RUN_DIR is for another cluster)"
fi
SECRET_FILE="${SPARK_AUTH_SECRET_FILE:-$RUN_DIR/secret}"
[[ -s "$SECRET_FILE" && -r "$SECRET_FILE" ]] || die "secret file not found or empty: $SECRET_FILE (set SPARK_AUTH_SECRET_FILE)"
[[ "$(stat -L -c %a "$SECRET_FILE")" =~ ^[0-7]00$ ]] || die "secret file $SECRET_FILE is readable by others: chmod 600 it"

SPARK_HOME="${SPARK_HOME:-$(cluster_env SPARK_HOME)}"
if [[ -z "$SPARK_HOME" ]]; then
  SPARK_HOME="$("$DRIVER_PYTHON" -c 'from pyspark.find_spark_home import _find_spark_home; print(_find_spark_home())')" \
    || die "pyspark not found for $DRIVER_PYTHON; set PYTHON or SPARK_HOME"
fi
export SPARK_HOME

if [[ -n "${SUBMIT_PYFILES:-}" ]]; then
  PYFILES="$SUBMIT_PYFILES"
  [[ -f "$PYFILES" ]] || die "SUBMIT_PYFILES=$PYFILES not found"
else
  "$DRIVER_PYTHON" "$REPO/scripts/package.py" >&2
  PYFILES="$REPO/dist/segmentation-pyfiles.zip"
fi

# A master on this machine: the driver and its UI bind to the loopback interface too.
master_host="${MASTER#spark://}"; master_host="${master_host%%:*}"
if [[ "$master_host" == 127.0.0.1 || "$master_host" == localhost ]]; then
  export SPARK_LOCAL_IP=127.0.0.1
  local_driver=1
else
  local_driver=0
fi

props="$(mktemp "${TMPDIR:-/tmp}/segment-submit.XXXXXXXX")"  # mode 600
child=""
# shellcheck disable=SC2317  # called from traps
cleanup() { rm -f "$props"; }
# shellcheck disable=SC2317
forward() { if [[ -n "$child" ]]; then kill -"$1" "$child" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'forward TERM' TERM
trap 'forward INT' INT
{
  echo "# the job's Spark settings, then the cluster's; written by scripts/submit.sh, removed when it exits"
  grep -v -E '^[[:space:]]*(#|$)' "$REPO/conf/spark-defaults.conf" || true
  echo "spark.authenticate true"
  printf 'spark.authenticate.secret %s\n' "$(head -n 1 "$SECRET_FILE")"
  echo "spark.network.crypto.enabled true"
  echo "spark.pyspark.python $EXECUTOR_PYTHON"
  echo "spark.pyspark.driver.python $DRIVER_PYTHON"
  if [[ $local_driver == 1 ]]; then
    echo "spark.driver.host 127.0.0.1"
    echo "spark.driver.bindAddress 127.0.0.1"
  fi
} >"$props"

# the repo's conf/ holds log4j2.properties (quiet driver logs); spark-defaults.conf is already in $props
export SPARK_CONF_DIR="${SPARK_CONF_DIR:-$REPO/conf}"
"$SPARK_HOME/bin/spark-submit" \
  --master "$MASTER" \
  --deploy-mode client \
  --name segment-customers \
  --properties-file "$props" \
  --py-files "$PYFILES" \
  "${submit_opts[@]}" \
  "${SUBMIT_APP:-$REPO/jobs/segment_customers.py}" "${job_args[@]}" &
child=$!
# wait returns early when a trapped signal arrives; wait again for the driver's own exit code
rc=0
while true; do
  wait "$child" && rc=0 || rc=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$rc"
