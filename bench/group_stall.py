"""The consumer-group stall (issue 18), reproduced: two consumers of one group on the local broker, each a real
kafka-python process, under the group protocol and under the static split the routers use by default.

    python bench/group_stall.py       # -> bench/results/group_stall.{json,md}

Each consumer logs, every 0.5 s, which partitions it holds and how many records it has read; the run reports
when each got its partitions and how many records of the 4 partitions were read within --seconds. Cases:
both started together, the second 8 s after the first, and each of those again as static shares
(assign p % 2 == i, offsets committed to the same group).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import RESULTS, command_line, machine_facts, private_stack, write_json

CHILD = r'''
import json, sys, time
from kafka import KafkaConsumer, TopicPartition
bs, topic, group, mode, index, count, seconds = sys.argv[1:8]
index, count, seconds = int(index), int(count), float(seconds)
kw = dict(bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
          session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=50)
if mode == "group":
    c = KafkaConsumer(topic, **kw)
else:
    c = KafkaConsumer(**kw)
    c.assign([TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic)) if p % count == index])
t0, n = time.time(), 0
while time.time() - t0 < seconds:
    got = c.poll(timeout_ms=200)
    n += sum(len(rs) for rs in got.values())
    if got:
        c.commit()
    print(json.dumps({"t": round(time.time() - t0, 1), "n": n, "partitions": sorted(p.partition for p in c.assignment())}),
          flush=True)
    time.sleep(0.5)
'''


def run_case(bs: str, mode: str, stagger: float, seconds: float, group: str, records: int) -> dict:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bs)
    for i in range(records):
        p.send("req", key=str(i).encode(), value=b"x" * 100)
    p.flush()
    p.close()
    procs = []
    for i in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, bs, "req", group, mode, str(i), "2", str(seconds)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        time.sleep(stagger if i == 0 else 0)
    members = []
    for proc in procs:
        rows = [json.loads(line) for line in proc.communicate()[0].splitlines() if line.startswith("{")]
        first = next((r for r in rows if r["partitions"]), None)
        members.append({"first_partitions_at_s": first["t"] if first else None,
                        "partitions_at_end": rows[-1]["partitions"] if rows else [],
                        "records_read": rows[-1]["n"] if rows else 0})
    return {"mode": mode, "stagger_s": stagger, "records_per_case": records, "members": members,
            "records_read": sum(m["records_read"] for m in members)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--records", type=int, default=2000)
    a = ap.parse_args()
    res = {"command": command_line(), "machine": machine_facts(), "cases": []}
    with private_stack("stall") as st:
        from kafka.admin import KafkaAdminClient, NewTopic

        KafkaAdminClient(bootstrap_servers=st.bootstrap).create_topics([NewTopic("req", 4, 1)])
        for k, (mode, stagger) in enumerate([("group", 0.0), ("group", 8.0), ("static", 0.0), ("static", 8.0)]):
            case = run_case(st.bootstrap, mode, stagger, a.seconds, f"g{k}", a.records)
            case["records_available"] = a.records * (k + 1)
            res["cases"].append(case)
            print(case, flush=True)
    res["loadavg_end"] = list(os.getloadavg())
    write_json(RESULTS / "group_stall.json", res)
    lines = ["# Consumer-group stall on the local broker", "", f"Command: `{res['command']}`; load average "
             f"{res['machine']['loadavg_1_5_15']} before, {res['loadavg_end']} after.", "",
             "Two consumers of one group, 4 partitions, each group new and reading from the start "
             f"({a.seconds:.0f} s per case).", "",
             "| mode | second starts after | member 0: partitions at s | member 1: partitions at s | "
             "partitions held at the end | records read / available |", "|---|---|---|---|---|---|"]
    for c in res["cases"]:
        m0, m1 = c["members"]
        lines.append(f"| {c['mode']} | {c['stagger_s']:.0f} s | {m0['first_partitions_at_s']} | "
                     f"{m1['first_partitions_at_s']} | {m0['partitions_at_end']} + {m1['partitions_at_end']} | "
                     f"{c['records_read']} / {c['records_available']} |")
    lines += ["", "Under the group protocol every join waits half the session timeout and the members' joins keep "
              "missing each other, so partitions stay unassigned for tens of seconds (or the whole case). The "
              "static split reads every partition from the first poll; the routers use it by default "
              "(`PREFSTREAM_ROUTER_ASSIGNMENT=static`)."]
    (RESULTS / "group_stall.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "group_stall.md").read_text())


if __name__ == "__main__":
    main()
