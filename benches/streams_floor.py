"""What Redis spends per processed job when a queue keeps no per-job record (ChasquiMQ's shape),
and when it writes the least a per-job status needs: an experiment for issue 23
(docs/design/queue-v2.md, "The floor with a record per job"). Run by benches/queue_floor.sh.

usage: streams_floor.py PORT N MODE
  bare    N entries in a stream with a consumer group; claimed with XREADGROUP COUNT 50 and
          acked with XACKDEL (Redis >= 8.2; XACK + XDEL before), pipelined, no Lua
  record  the same, plus one `SET done:<id> <status> EX <ttl>` per job in the ack's pipeline:
          one write per job, which is what "succeeded, kept for the retention period, readable
          by id" costs at least

Prints one JSON line: {"mode", "redis", "n", "redis_cpu_us_per_job", "commands_per_job"}.
The client here is Python, so its own rate says nothing; only Redis's CPU per job is the figure.
"""
import json
import sys

import redis

port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if mode not in ("bare", "record"):
    sys.exit(f"unknown mode {mode!r}: bare or record")
r = redis.Redis(port=port)
r.flushall()
ver = r.info("server")["redis_version"]
xackdel = tuple(int(x) for x in ver.split(".")[:2]) >= (8, 2)
spec = b'{"user":"u","payload":{}}'
r.xgroup_create("q", "g", id="0", mkstream=True)
p = r.pipeline(transaction=False)
for i in range(n):
    p.xadd("q", {"s": spec, "t": "tenant-1"})
    if i % 1000 == 999:
        p.execute()
p.execute()


def snapshot():
    info = r.info("all")
    cpu = info["used_cpu_user"] + info["used_cpu_sys"]
    return cpu, info["total_commands_processed"]


cpu0, cmd0 = snapshot()
done = 0
while done < n:
    got = r.xreadgroup("g", "w1", {"q": ">"}, count=50)
    if not got:
        break
    ids = [e[0] for e in got[0][1]]
    p = r.pipeline(transaction=False)
    if xackdel:
        p.execute_command("XACKDEL", "q", "g", "IDS", len(ids), *ids)
    else:
        p.xack("q", "g", *ids)
        p.xdel("q", *ids)
    if mode == "record":
        for i in ids:
            p.set(b"done:" + i, b'{"s":"succeeded","f":1733616000000}', ex=86400)
    p.execute()
    done += len(ids)
cpu1, cmd1 = snapshot()
print(json.dumps({"mode": mode, "redis": ver, "n": done,
                  "redis_cpu_us_per_job": round((cpu1 - cpu0) / done * 1e6, 2),
                  "commands_per_job": round((cmd1 - cmd0 - 1) / done, 2)}))
