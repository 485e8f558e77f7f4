#!/usr/bin/env bash
# A SQL endpoint for BI tools: the Spark Thrift Server (HiveServer2 protocol, from the pyspark distribution) on
# 127.0.0.1, over the metastore the job registers its tables in.
#
#   scripts/thrift_server.sh start [--metastore DIR] [--port P] [--run-dir DIR]   # waits until it accepts queries
#   scripts/thrift_server.sh status | stop [--run-dir DIR]
#   beeline -u jdbc:hive2://127.0.0.1:10000 -e "SELECT * FROM segmentation.segments WHERE snapshot_date = '...'"
#
# Environment: PYTHON (default .venv/bin/python; SPARK_HOME defaults to its pyspark), THRIFT_METASTORE (default
# output/_catalog), THRIFT_PORT (10000), THRIFT_RUN_DIR (run/thrift: pid file and log), THRIFT_WAIT_S (300).
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-}"; shift || true
metastore="${THRIFT_METASTORE:-output/_catalog}"
port="${THRIFT_PORT:-10000}"
run_dir="${THRIFT_RUN_DIR:-run/thrift}"
wait_s="${THRIFT_WAIT_S:-300}"
while [ $# -gt 0 ]; do
  case "$1" in
    --metastore) metastore="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --run-dir) run_dir="$2"; shift 2 ;;
    *) echo "thrift_server.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-.venv/bin/python}"
SPARK_HOME="${SPARK_HOME:-$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
pid_file="$run_dir/thrift.pid"
log_file="$run_dir/thrift.log"

ours() {  # the pid file's process is still the server we started
  [ -f "$pid_file" ] && pid="$(cat "$pid_file")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "HiveThriftServer2"
}

case "$cmd" in
  start)
    if ours; then echo "already running (pid $(cat "$pid_file"))"; exit 0; fi
    mkdir -p "$run_dir" "$metastore"
    metastore="$(cd "$metastore" && pwd)"
    # positional: the metastore's settings; the server binds 127.0.0.1 only; no web UI
    nohup "$SPARK_HOME/bin/spark-submit" \
      --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2 \
      --master "local[2]" --name segmentation-thrift-server \
      --conf spark.ui.enabled=false \
      --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
      --conf spark.sql.catalogImplementation=hive \
      --conf "spark.sql.warehouse.dir=$metastore/warehouse" \
      --conf "spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName=$metastore/metastore_db;create=true" \
      --conf "spark.driver.extraJavaOptions=-Dderby.stream.error.file=$metastore/derby.log" \
      spark-internal \
      --hiveconf hive.server2.thrift.bind.host=127.0.0.1 \
      --hiveconf "hive.server2.thrift.port=$port" \
      --hiveconf hive.server2.transport.mode=binary \
      >"$log_file" 2>&1 </dev/null &
    server_pid=$!
    echo "$server_pid" >"$pid_file"
    deadline=$((SECONDS + wait_s))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
      # alive by pid, not by command line: while spark-submit execs into the JVM, /proc/PID/cmdline can read
      # empty for a moment, and a start that gave up then left a server running behind it
      if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "thrift server exited; see $log_file" >&2; tail -20 "$log_file" >&2; rm -f "$pid_file"; exit 1
      fi
      if [ $SECONDS -ge $deadline ]; then echo "thrift server not listening after ${wait_s}s; see $log_file" >&2; exit 1; fi
      sleep 1
    done
    echo "thrift server on jdbc:hive2://127.0.0.1:$port (pid $(cat "$pid_file"), metastore $metastore)"
    ;;
  status)
    if ours; then echo "running (pid $(cat "$pid_file"))"; else echo "not running"; exit 3; fi
    ;;
  stop)
    if ! ours; then echo "not running"; rm -f "$pid_file"; exit 0; fi
    pid="$(cat "$pid_file")"
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$pid_file"
    echo "stopped (pid $pid)"
    ;;
  *)
    echo "usage: scripts/thrift_server.sh start|status|stop [--metastore DIR] [--port P] [--run-dir DIR]" >&2
    exit 2
    ;;
esac
