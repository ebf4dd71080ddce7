"""Overload: the router at twice its capacity must still answer every request, and by its deadline.

    python bench/overload.py          # ~9 minutes; adds "overload" to bench/results/reliability.{json,md}

A private stack (Tansu broker, FalkorDB, the real `prefstream ingest` and `prefstream router --workers 0`
processes, a fixed-seed model) with the reliability run's users and queries in the graph. First the capacity:
route requests at rising rates for --step-s each. Issue 18's rule takes the highest rate whose every request was
answered with p99 at or under the deadline, shed replies counted as answers; once shedding is cheap that rate grows
until the load generator saturates, so the capacity used here also asks that at least --min-decided of the requests
got a real decision (both are reported). Then --overload-s at --factor x capacity. Latency is reply arrival
minus send time (one clock). A request dequeued past its deadline is answered at once from the prior, flagged
shed; the targets (issue 18) are p99 <= deadline + 100 ms and 0 unanswered. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, PrivateStack, clean_env, command_line, llm_events, machine_facts, publish_fixed_model  # noqa: E402
from common import write_json  # noqa: E402
from reliability import Child, ReplyCollector, Traffic, teardown, workload  # noqa: E402

clean_env()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deadline-ms", type=int, default=1000)
    ap.add_argument("--rates", default="25,50,100,200,400,800", help="capacity search, requests/s")
    ap.add_argument("--step-s", type=float, default=20.0)
    ap.add_argument("--min-decided", type=float, default=0.5,
                    help="share of a step's requests that must be decided (not shed) for the rate to count as capacity")
    ap.add_argument("--factor", type=float, default=2.0, help="overload rate = factor x capacity")
    ap.add_argument("--overload-s", type=float, default=300.0)
    ap.add_argument("--echo-s", type=float, default=60.0, help="the broker echo floor at the overload rate")
    ap.add_argument("--events", type=int, default=4000, help="turns and feedback in the graph before the run")
    ap.add_argument("--pool", type=int, default=64, help="distinct query texts")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--route-generation-s", type=int, default=10,
                    help="route topics per generation of this many seconds (streams/route_topics.py; 0: one topic; "
                         "10 is what `prefstream up` uses, each kept PREFSTREAM_ROUTE_KEEP_S = 20 s)")
    return ap.parse_args()


def run_rate(traffic: Traffic, collector: ReplyCollector, rate: float, seconds: float, tag: str,
             deadline_ms: int) -> dict:
    """Requests at ``rate`` for ``seconds``; waits for the replies, then summarizes them."""
    before = set(traffic.requests)
    traffic.stop_req.clear()
    t = threading.Thread(target=traffic.requester, args=(rate, tag), daemon=True)
    t.start()
    time.sleep(seconds)
    traffic.stop_req.set()
    t.join(10)
    ids = [r for r in traffic.requests if r not in before]
    collector.wait_answered(ids, timeout=2 * deadline_ms / 1000 + 30, stall_s=20)
    out = {"rate": rate, "seconds": seconds, "sent": len(ids), **collector.summary(ids, traffic.requests)}
    out["sent_per_s"] = round(len(ids) / seconds, 1)
    return out


def capacity(traffic: Traffic, collector: ReplyCollector, rates: list[float], step_s: float,
             deadline_ms: int, min_decided: float) -> tuple[float, float, list[dict]]:
    """(capacity, issue 18's answered-only capacity, the steps). Steps rise while every request is answered with
    p99 under the deadline; the capacity is the highest of those rates where at least ``min_decided`` of the
    requests were decided rather than shed."""
    rows, best, answered, enough = [], 0.0, 0.0, True  # enough: every step so far decided at least min_decided
    for i, rate in enumerate(rates):
        row = run_rate(traffic, collector, rate, step_s, f"cap{i}-", deadline_ms)
        row["decided_share"] = round(row["reply_kinds"].get("decision", 0) / max(1, row["sent"]), 3)
        rows.append(row)
        print(f"  {rate:6.0f} req/s: p50 {row['latency_p50_ms']} ms, p99 {row['latency_p99_ms']} ms, "
              f"kinds {row['reply_kinds']}, unanswered {row['unanswered']}", flush=True)
        if row["unanswered"] or (row["latency_p99_ms"] or 1e9) > deadline_ms:
            break
        answered = rate
        enough = enough and row["decided_share"] >= min_decided
        if enough:
            best = rate
        time.sleep(3)  # let the queue empty between steps
    return best, answered, rows


def echo_floor(stack: PrivateStack, s, rate: float, seconds: float, logdir: Path) -> dict:
    """The floor: a bare broker echo (bench/route_latency.py's, no work) at the overload rate on the same broker,
    the router and ingest idle. If the echo's own p99 passes the deadline, no router can meet it here."""
    import route_latency

    row: dict = {"rate": rate, "seconds": seconds}
    route_latency.run_echo(stack, s, "overload", [row], [rate], seconds, 2.0, logdir)
    return row


def write_md(res: dict) -> None:
    path = RESULTS / "reliability.md"
    text = path.read_text() if path.exists() else "# Reliability\n"
    text = text.split("\n## Overload")[0].rstrip() + "\n"
    o = res["overload"]
    lines = ["", "## Overload (bench/overload.py)", "", f"Command: `{o['command']}`; load average before "
             f"{o['loadavg_before']}, after {o['loadavg_after']}.", "",
             "| rate req/s | sent | p50 ms | p99 ms | replies by kind | unanswered |", "|---|---|---|---|---|---|"]
    for r in o["capacity_steps"] + [o["run"]]:
        lines.append(f"| {r['rate']:.0f} | {r['sent']} | {r['latency_p50_ms']} | {r['latency_p99_ms']} | "
                     f"{r['reply_kinds']} | {r['unanswered']} |")
    lines += ["", f"Capacity (highest rate with every request answered, p99 <= deadline {o['deadline_ms']} ms and at "
              f"least {o['min_decided']:.0%} decided, not shed): **{o['capacity_rate']:.0f} req/s**; by issue 18's "
              f"rule alone (shed replies count as answers): {o['answered_capacity_rate']:.0f} req/s. At {o['rate']:.0f} req/s for "
              f"{o['run']['seconds']:.0f} s: p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms, {o['shed']} shed, "
              f"{o['unanswered']} unanswered (target: p99 <= {o['deadline_ms'] + 100} ms, 0 unanswered)."]
    e = o.get("echo_floor")
    if e:
        lines += ["", f"Floor in the same run: a bare broker echo (no work) at {e['rate']:.0f} msg/s for "
                  f"{e['seconds']:.0f} s on the same broker, router and ingest idle: p50 {e['echo_p50_ms']} ms, "
                  f"p99 {e['echo_p99_ms']} ms, {e['echo_answered']}/{e['echo_sent']} answered."]
    path.write_text(text + "\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    from streams.client import PrefstreamClient
    from streams.kafka_config import create_topics

    events, _, _ = workload(args.events, args.seed, args.pool)
    stack = PrivateStack("overload")
    children, collector = [], None
    res = {"command": command_line(), "machine": machine_facts()}
    try:
        s = stack.settings(kafka_partitions=8, router_workers=0, route_deadline_ms=args.deadline_ms,
                           route_generation_s=args.route_generation_s)
        create_topics(s)
        publish_fixed_model(s.model_dir)
        logdir = stack.dir / "logs"
        children = [Child("ingest", ["ingest"], s, logdir), Child("router", ["router", "--workers", "0"], s, logdir)]
        client = PrefstreamClient(s)
        for e in llm_events():
            client.publish(e)
        traffic = Traffic(s, client, random.Random(args.seed), events)
        traffic.publisher(events, rate=2000.0)
        for c in children:
            c.start()
        collector = ReplyCollector(s)
        collector.start()
        for i in range(6):  # until the ingest has caught up and the router answers in time (model loaded)
            w = run_rate(traffic, collector, 5.0, 15.0, f"warm{i}-", args.deadline_ms)
            print("warm-up", w["reply_kinds"], w["latency_p99_ms"], flush=True)
            if set(w["reply_kinds"]) == {"decision"} and (w["latency_p99_ms"] or 1e9) <= args.deadline_ms:
                break
        load0 = list(os.getloadavg())
        cap, answered_cap, steps = capacity(traffic, collector, [float(r) for r in args.rates.split(",")],
                                            args.step_s, args.deadline_ms, args.min_decided)
        rate = max(args.factor * cap, float(args.rates.split(",")[0]))
        print(f"capacity {cap} req/s; overload at {rate} req/s for {args.overload_s} s", flush=True)
        run = run_rate(traffic, collector, rate, args.overload_s, "over-", args.deadline_ms)
        load1 = list(os.getloadavg())
        echo = echo_floor(stack, s, rate, args.echo_s, logdir) if args.echo_s > 0 else None
        res["overload"] = {"command": res["command"], "rate": rate, "capacity_rate": cap,
                           "answered_capacity_rate": answered_cap, "min_decided": args.min_decided,
                           "deadline_ms": args.deadline_ms, "p50_ms": run["latency_p50_ms"],
                           "p99_ms": run["latency_p99_ms"], "shed": run["reply_kinds"].get("shed", 0),
                           "unanswered": run["unanswered"], "run": run, "capacity_steps": steps,
                           "loadavg_before": load0, "loadavg_after": load1, "echo_floor": echo}
        client.close()
    finally:
        teardown(collector, children, stack)
    path = RESULTS / "reliability.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged["overload"] = res["overload"] | {"machine": res["machine"]}
    write_json(path, merged)
    write_md(res)
    print(f"overload: {res['overload']['p50_ms']} / {res['overload']['p99_ms']} ms p50/p99, "
          f"{res['overload']['shed']} shed, {res['overload']['unanswered']} unanswered")


if __name__ == "__main__":
    main()
