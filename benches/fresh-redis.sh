# Sourced by the side-by-side benchmarks: builds the release `gantry` into $bin and starts a
# fresh, non-persistent redis-server on a free port ($port), stopped and removed on exit.
cargo build --release --quiet --bin gantry
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --save '' --appendonly no --daemonize yes --dir "$dir" --logfile redis.log --pidfile "$dir/redis.pid"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 0.3
