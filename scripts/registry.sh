#!/usr/bin/env bash
# Start, stop or check a local OCI registry (Debian's docker-registry, the CNCF Distribution
# server) on 127.0.0.1, for examples, tests and benchmarks.
#
#   scripts/registry.sh start    # idempotent; prints the address
#   scripts/registry.sh stop
#   scripts/registry.sh status
#
# BERTH_REGISTRY_PORT (default 5000) and BERTH_REGISTRY_DIR (default /var/tmp/berth-registry)
# choose where it listens and keeps its data. It only ever listens on loopback.
set -euo pipefail

port="${BERTH_REGISTRY_PORT:-5000}"
dir="${BERTH_REGISTRY_DIR:-/var/tmp/berth-registry}"
pidfile="$dir/registry.pid"
log="$dir/registry.log"

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

ready() {
  curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null
}

case "${1:-}" in
  start)
    if ! command -v docker-registry >/dev/null; then
      echo "docker-registry is not installed (apt-get install docker-registry)" >&2
      exit 1
    fi
    mkdir -p "$dir/data"
    if running && ready; then
      echo "127.0.0.1:$port"
      exit 0
    fi
    cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
YAML
    nohup docker-registry serve "$dir/config.yml" >>"$log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 100); do
      if ready; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      if ! running; then break; fi
      sleep 0.1
    done
    echo "registry did not start; see $log" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
    ;;
  stop)
    if running; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 1 50); do running || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
    ;;
  status)
    if running && ready; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
