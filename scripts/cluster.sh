#!/usr/bin/env bash
# A Spark standalone cluster on this machine, from the installed pyspark: one master and N workers, bound to
# 127.0.0.1 only, with authentication (and RPC encryption) on.
#
#   scripts/cluster.sh start  [--workers N] [--cores N] [--memory SIZE] [--run-dir DIR]
#                             [--master-port P] [--ui-port P] [--worker-ui-port P]
#   scripts/cluster.sh status [--run-dir DIR]
#   scripts/cluster.sh stop   [--run-dir DIR]
#
# Defaults (or the environment): 2 workers (CLUSTER_WORKERS), 1 core (CLUSTER_WORKER_CORES) and 2g
# (CLUSTER_WORKER_MEMORY) each, run dir run/cluster/ in the repo (CLUSTER_RUN_DIR), master port 7077
# (CLUSTER_MASTER_PORT), master UI 8080 (CLUSTER_UI_PORT), worker UIs from 8081 (CLUSTER_WORKER_UI_PORT).
# A port of 0 means "pick a free one". SPARK_HOME defaults to the pyspark installed for $PYTHON
# (default: the repo's .venv/bin/python, else python3).
#
# start generates a fresh secret with the kernel's CSPRNG into RUN_DIR/secret (mode 600) and hands it to the
# daemons in a properties file (RUN_DIR/conf/daemon.properties, mode 600): never on a command line (ps), in the
# environment of the daemons, or in a log. It returns once the master and every worker are ALIVE, and writes
# RUN_DIR/cluster.env (master URL and UI address, no secret) for scripts/submit.sh.
# stop ends only the processes whose pid files it wrote (and their children: executors, Python workers), after
# checking that each pid still runs the daemon it started, then removes the secret. Logs stay in RUN_DIR/logs.
# status lists the daemons and the master's view (workers, applications); it exits 3 when nothing runs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

python_bin() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"
  elif [[ -x "$REPO/.venv/bin/python" ]]; then echo "$REPO/.venv/bin/python"
  else echo python3; fi
}

spark_home() {
  if [[ -n "${SPARK_HOME:-}" ]]; then echo "$SPARK_HOME"; return; fi
  "$(python_bin)" -c 'from pyspark.find_spark_home import _find_spark_home; print(_find_spark_home())' 2>/dev/null \
    || die "pyspark not found for $(python_bin); set PYTHON or SPARK_HOME (make install creates .venv)"
}

# --- options -------------------------------------------------------------------------------------------------
COMMAND="${1:-}"
[[ -n "$COMMAND" ]] || { usage >&2; exit 2; }
shift
WORKERS="${CLUSTER_WORKERS:-2}"
CORES="${CLUSTER_WORKER_CORES:-1}"
MEMORY="${CLUSTER_WORKER_MEMORY:-2g}"
RUN_DIR="${CLUSTER_RUN_DIR:-$REPO/run/cluster}"
MASTER_PORT="${CLUSTER_MASTER_PORT:-7077}"
UI_PORT="${CLUSTER_UI_PORT:-8080}"
WORKER_UI_PORT="${CLUSTER_WORKER_UI_PORT:-8081}"
START_TIMEOUT="${CLUSTER_START_TIMEOUT:-90}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) WORKERS="${2:?--workers needs a value}"; shift 2 ;;
    --cores) CORES="${2:?--cores needs a value}"; shift 2 ;;
    --memory) MEMORY="${2:?--memory needs a value}"; shift 2 ;;
    --run-dir) RUN_DIR="${2:?--run-dir needs a value}"; shift 2 ;;
    --master-port) MASTER_PORT="${2:?--master-port needs a value}"; shift 2 ;;
    --ui-port) UI_PORT="${2:?--ui-port needs a value}"; shift 2 ;;
    --worker-ui-port) WORKER_UI_PORT="${2:?--worker-ui-port needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for value in "$WORKERS" "$CORES" "$MASTER_PORT" "$UI_PORT" "$WORKER_UI_PORT"; do
  [[ "$value" =~ ^[0-9]+$ ]] || die "expected a number, got '$value'"
done
[[ "$WORKERS" -ge 1 && "$CORES" -ge 1 ]] || die "--workers and --cores must be at least 1"
[[ "$MEMORY" =~ ^[0-9]+[mMgG]$ ]] || die "--memory must look like 512m or 2g, got '$MEMORY'"
RUN_DIR="$(realpath -m "$RUN_DIR")"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
CONF_DIR="$RUN_DIR/conf"
DAEMON_PROPS="$CONF_DIR/daemon.properties"

# --- processes -----------------------------------------------------------------------------------------------
# A process is identified by pid + start time (field 22 of /proc/PID/stat), so a recycled pid is never killed.
start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }

# "pid starttime" lines of the daemon (from its pid file) if it still runs what we started, else nothing.
daemon_identity() {
  local pidfile="$1" class="$2" pid recorded
  [[ -f "$pidfile" ]] || return 0
  read -r pid recorded <"$pidfile" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [[ "$(start_time "$pid")" == "$recorded" ]] || return 0
  # our daemons carry our properties file on their command line: a different cluster's daemon does not
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 0
  [[ "$cmdline" == *" $class "* && "$cmdline" == *" --properties-file $DAEMON_PROPS "* ]] || return 0
  echo "$pid $recorded"
}

# "pid starttime" of every descendant of a pid (executor JVMs, Python daemons), children first found first.
descendants() {
  local queue=("$1") pid child
  while [[ ${#queue[@]} -gt 0 ]]; do
    pid="${queue[0]}"; queue=("${queue[@]:1}")
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
      echo "$child $(start_time "$child")"
      queue+=("$child")
    done
  done
}

still_same() { [[ -n "$2" && "$(start_time "$1")" == "$2" ]]; }

stop_daemon() {
  local name="$1" pidfile="$2" class="$3" identity pid stamp family waited=0
  identity="$(daemon_identity "$pidfile" "$class")"
  if [[ -z "$identity" ]]; then
    [[ -f "$pidfile" ]] && echo "$name: not running (removing stale pid file)"
    rm -f "$pidfile"
    return 0
  fi
  read -r pid stamp <<<"$identity"
  family="$(descendants "$pid")"
  kill -TERM "$pid" 2>/dev/null || true
  # a worker's shutdown hook stops its executors; give it time, then insist
  while still_same "$pid" "$stamp" && [[ $waited -lt 150 ]]; do sleep 0.1; waited=$((waited + 1)); done
  if still_same "$pid" "$stamp"; then kill -KILL "$pid" 2>/dev/null || true; fi
  while read -r child child_stamp; do
    [[ -n "${child:-}" ]] || continue
    if still_same "$child" "$child_stamp"; then kill -KILL "$child" 2>/dev/null || true; fi
  done <<<"$family"
  rm -f "$pidfile"
  echo "$name: stopped (pid $pid)"
}

# Launch a daemon in its own session (it outlives this script and the terminal) and record pid + start time.
# spark-class execs the JVM, so the pid written by the inner shell is the JVM's.
launch() {
  local name="$1" local_dir="$2"; shift 2
  local pidfile="$PID_DIR/$name.pid" log="$LOG_DIR/$name.log" pid stamp
  mkdir -p "$local_dir"
  if [[ -f "$log" ]]; then mv -f "$log" "$log.1"; fi  # the previous start's log, one generation kept
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
  env SPARK_HOME="$SPARK_HOME_DIR" SPARK_CONF_DIR="$CONF_DIR" SPARK_LOCAL_IP=127.0.0.1 \
    SPARK_PUBLIC_DNS=127.0.0.1 SPARK_LOCAL_DIRS="$local_dir" SPARK_DAEMON_MEMORY="${CLUSTER_DAEMON_MEMORY:-512m}" \
    setsid bash -c 'echo $$ >"$0.tmp"; exec "$@"' "$pidfile" "$SPARK_HOME_DIR/bin/spark-class" "$@" \
    </dev/null >>"$log" 2>&1 &
  local waited=0
  while [[ ! -s "$pidfile.tmp" && $waited -lt 100 ]]; do sleep 0.05; waited=$((waited + 1)); done
  read -r pid <"$pidfile.tmp" || die "$name did not start (see $log)"
  stamp="$(start_time "$pid")"
  echo "$pid $stamp" >"$pidfile"
  rm -f "$pidfile.tmp"
}

free_ports() {  # N distinct free ports on 127.0.0.1
  "$(python_bin)" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

master_state() {  # prints "STATUS ALIVE_WORKERS" from the master's JSON, or nothing
  "$(python_bin)" - "$1" <<'EOF' 2>/dev/null || true
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2) as r:
        state = json.load(r)
except Exception:
    sys.exit(0)
alive = sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")
print(state.get("status", "?"), alive)
EOF
}

read_env() {
  if [[ -f "$RUN_DIR/cluster.env" ]]; then grep "^$1=" "$RUN_DIR/cluster.env" | cut -d= -f2- || true; fi
}

# --- commands ------------------------------------------------------------------------------------------------
stop_all() {
  local pidfile
  for pidfile in "$PID_DIR"/worker-*.pid; do
    [[ -e "$pidfile" ]] || continue
    stop_daemon "$(basename "$pidfile" .pid)" "$pidfile" "$WORKER_CLASS"
  done
  stop_daemon master "$PID_DIR/master.pid" "$MASTER_CLASS"
  rm -f "$RUN_DIR/secret" "$DAEMON_PROPS" "$RUN_DIR/cluster.env"
}

cmd_start() {
  if [[ -n "$(daemon_identity "$PID_DIR/master.pid" "$MASTER_CLASS")" ]]; then
    die "a cluster already runs from $RUN_DIR (scripts/cluster.sh status / stop)"
  fi
  mkdir -p "$RUN_DIR"
  stop_all >/dev/null  # leftovers of a crashed start: stale pid files, or workers without a master
  SPARK_HOME_DIR="$(spark_home)"
  [[ -x "$SPARK_HOME_DIR/bin/spark-class" ]] || die "no bin/spark-class under SPARK_HOME=$SPARK_HOME_DIR"

  local ports=() n_free=0 i
  [[ "$MASTER_PORT" == 0 ]] && n_free=$((n_free + 1))
  [[ "$UI_PORT" == 0 ]] && n_free=$((n_free + 1))
  [[ "$WORKER_UI_PORT" == 0 ]] && n_free=$((n_free + WORKERS))
  if [[ $n_free -gt 0 ]]; then read -r -a ports <<<"$(free_ports "$n_free")"; fi
  if [[ "$MASTER_PORT" == 0 ]]; then MASTER_PORT="${ports[0]}"; ports=("${ports[@]:1}"); fi
  if [[ "$UI_PORT" == 0 ]]; then UI_PORT="${ports[0]}"; ports=("${ports[@]:1}"); fi
  local worker_ui_ports=()
  for ((i = 1; i <= WORKERS; i++)); do
    if [[ "$WORKER_UI_PORT" == 0 ]]; then worker_ui_ports+=("${ports[$((i - 1))]}")
    else worker_ui_ports+=("$((WORKER_UI_PORT + i - 1))"); fi
  done

  (umask 077 && mkdir -p "$PID_DIR" "$LOG_DIR" "$CONF_DIR" "$RUN_DIR/work" "$RUN_DIR/local")
  chmod 700 "$CONF_DIR"
  # the secret: 32 bytes from the kernel CSPRNG, hex; files created 600 before anything is written to them
  (
    umask 077
    secret="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    [[ ${#secret} -eq 64 ]] || exit 1
    printf '%s\n' "$secret" >"$RUN_DIR/secret"
    {
      echo "# generated by scripts/cluster.sh start; holds the cluster secret: mode 600, never commit"
      echo "spark.authenticate true"
      printf 'spark.authenticate.secret %s\n' "$secret"
      echo "spark.network.crypto.enabled true"
      echo "# no unauthenticated ways in: no REST submission server, no kill or decommission from the UIs"
      echo "spark.master.rest.enabled false"
      echo "spark.ui.killEnabled false"
      echo "spark.master.ui.decommission.allow.mode DENY"
      echo "# a port in use is an error, not a silent move to the next port (workers would look for the master)"
      echo "spark.port.maxRetries 0"
    } >"$DAEMON_PROPS"
  ) || die "could not write the secret"
  chmod 600 "$RUN_DIR/secret" "$DAEMON_PROPS"
  cat >"$CONF_DIR/log4j2.properties" <<'EOF'
# daemons: INFO to the console, which scripts/cluster.sh sends to RUN_DIR/logs/<daemon>.log
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
EOF

  # whatever fails from here on (a daemon that dies, a timeout), stop what this start launched
  trap 'if [[ $? -ne 0 ]]; then echo "cluster.sh: start failed; stopping what started" >&2; stop_all >&2; fi' EXIT
  launch master "$RUN_DIR/local/master" "$MASTER_CLASS" \
    --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$UI_PORT" --properties-file "$DAEMON_PROPS"
  wait_until "master" "$UI_PORT" 0
  for ((i = 1; i <= WORKERS; i++)); do
    launch "worker-$i" "$RUN_DIR/local/worker-$i" "$WORKER_CLASS" \
      --host 127.0.0.1 --webui-port "${worker_ui_ports[$((i - 1))]}" --cores "$CORES" --memory "$MEMORY" \
      --work-dir "$RUN_DIR/work/worker-$i" --properties-file "$DAEMON_PROPS" "spark://127.0.0.1:$MASTER_PORT"
  done
  wait_until "$WORKERS worker(s)" "$UI_PORT" "$WORKERS"
  cat >"$RUN_DIR/cluster.env" <<EOF
MASTER_URL=spark://127.0.0.1:$MASTER_PORT
MASTER_UI_URL=http://127.0.0.1:$UI_PORT
WORKERS=$WORKERS
WORKER_CORES=$CORES
WORKER_MEMORY=$MEMORY
WORKER_UI_PORTS=${worker_ui_ports[*]}
SPARK_HOME=$SPARK_HOME_DIR
EOF
  echo "cluster up: master spark://127.0.0.1:$MASTER_PORT (UI http://127.0.0.1:$UI_PORT), $WORKERS worker(s)" \
    "x $CORES core(s) x $MEMORY; run dir $RUN_DIR"
}

# Poll the master's JSON until it is ALIVE with at least N alive workers; fail early if a daemon died.
wait_until() {
  local what="$1" ui_port="$2" want="$3" deadline=$((SECONDS + START_TIMEOUT)) state status alive pidfile
  while [[ $SECONDS -lt $deadline ]]; do
    for pidfile in "$PID_DIR"/*.pid; do
      local class="$WORKER_CLASS"
      [[ "$(basename "$pidfile")" == master.pid ]] && class="$MASTER_CLASS"
      if [[ -z "$(daemon_identity "$pidfile" "$class")" ]]; then
        local log
        log="$LOG_DIR/$(basename "$pidfile" .pid).log"
        echo "cluster.sh: $(basename "$pidfile" .pid) exited during start; from $log:" >&2
        { grep -E ' ERROR |^[a-zA-Z.]*(Exception|Error)' "$log" | head -n 5 || tail -n 20 "$log"; } >&2
        return 1
      fi
    done
    state="$(master_state "$ui_port")"
    if [[ -n "$state" ]]; then
      read -r status alive <<<"$state"
      if [[ "$status" == ALIVE && "$alive" -ge "$want" ]]; then return 0; fi
    fi
    sleep 0.5
  done
  echo "cluster.sh: $what not ALIVE after ${START_TIMEOUT}s (logs in $LOG_DIR)" >&2
  return 1
}

cmd_status() {
  local running=0 pidfile name class identity ui
  for pidfile in "$PID_DIR"/master.pid "$PID_DIR"/worker-*.pid; do
    [[ -e "$pidfile" ]] || continue
    name="$(basename "$pidfile" .pid)"
    class="$WORKER_CLASS"; [[ "$name" == master ]] && class="$MASTER_CLASS"
    identity="$(daemon_identity "$pidfile" "$class")"
    if [[ -n "$identity" ]]; then
      running=$((running + 1))
      echo "$name: running (pid ${identity%% *}, log $LOG_DIR/$name.log)"
    else
      echo "$name: not running (stale pid file $pidfile)"
    fi
  done
  if [[ $running -eq 0 ]]; then echo "no cluster runs from $RUN_DIR"; return 3; fi
  ui="$(read_env MASTER_UI_URL)"
  if [[ -n "$ui" ]]; then
    "$(python_bin)" - "$ui" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/json/", timeout=3) as r:
        s = json.load(r)
except OSError as exc:
    sys.exit(print(f"master UI {sys.argv[1]} does not answer ({exc})"))
alive = [w for w in s["workers"] if w["state"] == "ALIVE"]
print(f"master {s['url']} {s['status']} (UI {sys.argv[1]}): {len(alive)} alive worker(s), "
      f"{s['coresused']}/{s['cores']} cores used, {len(s['activeapps'])} running app(s), "
      f"{len(s['completedapps'])} completed")
for app in s["activeapps"]:
    print(f"  app {app['id']} {app['name']} {app['state']} cores {app['cores']}")
EOF
  fi
}

case "$COMMAND" in
  start) cmd_start ;;
  stop) stop_all; echo "cluster stopped (logs kept in $LOG_DIR)" ;;
  status) cmd_status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
