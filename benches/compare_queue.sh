#!/usr/bin/env bash
# Two gantry binaries side by side on the queue benchmark: BASE, NEW, BASE, NEW, ... each on a
# fresh redis-server; prints throughput and the Redis cost per job (script time, commands, CPU,
# memory per waiting job). Usage: BASE=path NEW=path [N=20000 C=50 R=3] benches/compare_queue.sh
set -euo pipefail
: "${BASE:?BASE=path to the baseline gantry}" "${NEW:?NEW=path to the gantry to compare}"
N=${N:-20000}; C=${C:-50}; R=${R:-3}
for r in $(seq 1 $R); do
  for b in "$BASE" "$NEW"; do
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    redis-server --port $port --save '' --appendonly no --daemonize yes --logfile /dev/null --pidfile /tmp/cb-$port.pid
    sleep 0.3
    out=$(RUST_LOG=warn "$b" bench queue --redis-port $port $N $C --latency-samples 0 2>&1)
    echo "$b: $(echo "$out" | grep -o '"process_per_s":[0-9.]*') | $(echo "$out" | grep 'redis per job')"
    kill $(cat /tmp/cb-$port.pid); sleep 0.2
  done
done
