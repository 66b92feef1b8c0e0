#!/usr/bin/env bash
# A Redis Cluster on loopback for the test suites and the benchmark: 3 masters, 3 replicas.
#   scripts/cluster.sh start   # prints the node urls, comma-separated, once cluster_state is ok
#   scripts/cluster.sh stop
# CLUSTER_PORT (default 7101) is the first of six consecutive ports; CLUSTER_DIR holds the
# nodes' files and logs (default /tmp/lean-events-cluster-<port>).
set -euo pipefail
base="${CLUSTER_PORT:-7101}"
dir="${CLUSTER_DIR:-/tmp/lean-events-cluster-$base}"
ports=$(seq "$base" $((base + 5)))

urls() { local out=""; for p in $ports; do out="$out${out:+,}127.0.0.1:$p"; done; echo "redis+cluster://$out"; }

stop() {
  for p in $ports; do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
  for p in $ports; do
    for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 || break; sleep 0.1; done
  done
  rm -rf "$dir"
}

start() {
  command -v redis-server >/dev/null || { echo "cluster: redis-server is not installed" >&2; exit 1; }
  stop
  mkdir -p "$dir"
  for p in $ports; do
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --daemonize yes --dir "$dir/$p" \
      --cluster-enabled yes --cluster-config-file "nodes.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --repl-diskless-sync-delay 0 --logfile "$dir/$p/redis.log" >/dev/null
  done
  for p in $ports; do
    for _ in $(seq 1 50); do redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  done
  local nodes=""; for p in $ports; do nodes="$nodes 127.0.0.1:$p"; done
  # shellcheck disable=SC2086
  redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
  # ready when every node sees the cluster ok and every replica has its master's data (a
  # replica still syncing cannot take over)
  for _ in $(seq 1 300); do
    local ok=1
    for p in $ports; do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
      local repl; repl=$(redis-cli -p "$p" info replication 2>/dev/null)
      if echo "$repl" | grep -q 'role:slave'; then
        echo "$repl" | grep -q 'master_link_status:up' || ok=0
      fi
    done
    [ "$ok" = 1 ] && { urls; return 0; }
    sleep 0.1
  done
  echo "cluster: not ready (cluster_state ok, replicas in sync) within 30 s" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop|urls" >&2; exit 2 ;;
esac
