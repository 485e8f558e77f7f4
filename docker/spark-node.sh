#!/usr/bin/env bash
# Entry of the services in docker-compose.yml:  spark-node.sh master | worker | submit [JOB OPTIONS]
#
# Turns SPARK_AUTH_SECRET (from the git-ignored .env) into a private properties file (mode 600, in the
# container's /tmp), removes it from the environment and execs the daemon or spark-submit with
# --properties-file: the secret is on no command line and in no log. Refuses the placeholder of .env.example.
set -euo pipefail

role="${1:-}"
[[ $# -gt 0 ]] && shift
: "${SPARK_AUTH_SECRET:?SPARK_AUTH_SECRET is not set: copy .env.example to .env and set a secret}"
if [[ "$SPARK_AUTH_SECRET" == change-me || ${#SPARK_AUTH_SECRET} -lt 32 ]]; then
  echo "spark-node.sh: set SPARK_AUTH_SECRET in .env to a random value of 32+ characters (openssl rand -hex 32)" >&2
  exit 2
fi
MASTER_URL="spark://${SPARK_MASTER_HOST:-spark-master}:7077"
SPARK_HOME="${SPARK_HOME:-/opt/spark}"
PROJECT="${PROJECT_DIR:-/opt/project}"
container_ip() { hostname -i | awk '{print $1}'; }

props="$(umask 077 && mktemp /tmp/spark-auth.XXXXXXXX)"
{
  if [[ "$role" == submit ]]; then
    # the job's own Spark settings, as in local mode
    grep -v -E '^[[:space:]]*(#|$)' "$PROJECT/conf/spark-defaults.conf" || true
  fi
  echo "spark.authenticate true"
  printf 'spark.authenticate.secret %s\n' "$SPARK_AUTH_SECRET"
  echo "spark.network.crypto.enabled true"
  echo "spark.master.rest.enabled false"
  echo "spark.ui.killEnabled false"
  echo "spark.master.ui.decommission.allow.mode DENY"
} >"$props"
unset SPARK_AUTH_SECRET

case "$role" in
  master)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host "$(hostname)" --port 7077 --webui-port 8080 --properties-file "$props"
    ;;
  worker)
    # workers and the driver advertise their IP address on the compose network: containers started with
    # `docker compose run` have no DNS name the others could resolve
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --host "$(container_ip)" --webui-port 8081 --cores "${SPARK_WORKER_CORES:-1}" \
      --memory "${SPARK_WORKER_MEMORY:-2g}" --work-dir /tmp/spark-work --properties-file "$props" "$MASTER_URL"
    ;;
  submit)
    python3 "$PROJECT/scripts/package.py" --dist /tmp/dist >&2
    {
      echo "spark.pyspark.python python3"
      echo "spark.driver.host $(container_ip)"
      echo "spark.driver.bindAddress 0.0.0.0"
    } >>"$props"
    export SPARK_CONF_DIR="$PROJECT/conf"  # log4j2.properties: quiet driver logs
    exec "$SPARK_HOME/bin/spark-submit" --master "$MASTER_URL" --deploy-mode client --name segment-customers \
      --properties-file "$props" --py-files /tmp/dist/segmentation-pyfiles.zip \
      "$PROJECT/jobs/segment_customers.py" "$@"
    ;;
  *)
    echo "usage: spark-node.sh master | worker | submit [job options]" >&2
    exit 2
    ;;
esac
