"""Reliability under kill -9: replay simulator events and route requests through a private stack while
the Faust ingest worker, the router process and the FalkorDB server are killed and restarted; then count
what was lost or duplicated, check every route request got exactly one reply, and soak at a fixed rate
while sampling the RSS of every process.

    python bench/reliability.py                      # defaults: ~9 minutes on a loaded 2-core box
    python bench/reliability.py --events 20000 --chaos-s 120 --soak-s 60   # shorter

Writes bench/results/reliability.json and reliability.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (RESULTS, ROOT, PrivateStack, child_env, clean_env, command_line, llm_events,  # noqa: E402
                    machine_facts, publish_fixed_model, rss_kb, write_json)

clean_env()

from prefstream.events import RouteRequest  # noqa: E402

LOG = print


# --- workload ------------------------------------------------------------------------------------
def workload(n_events: int, seed: int, pool: int) -> tuple[list[tuple[str, str, bytes]], list[str], list[str]]:
    """Simulator events replayed in rounds (ids prefixed per round so every event is new) until
    ``n_events``; queries mapped onto ``pool`` distinct texts of the simulator so the encoder (the ingest
    bottleneck on this CPU, ~10 distinct long texts/s) stays off the critical path. Returns
    [(kind, key, bytes)], turn ids, feedback ids."""
    from trainer.simulate import SimConfig, Simulator

    base = [json.loads(e.to_bytes()) for e in Simulator(SimConfig(seed=seed, n_users=40, n_new_users=0, turns_min=20,
                                                                  turns_max=40)).events()
            if e.type in ("chat_turn", "feedback")]
    texts = sorted({d["query"][:300] for d in base if d["type"] == "chat_turn"})
    rng = random.Random(seed)
    texts = rng.sample(texts, min(pool, len(texts)))
    out, turn_ids, fb_ids = [], [], []
    r = 0
    while len(out) < n_events:
        p = f"r{r}-"
        for d in base:
            d = dict(d)
            d["event_id"] = p + d["event_id"]
            d["user_id"] = p + d["user_id"]
            if d["type"] == "chat_turn":
                d["conversation_id"] = p + d["conversation_id"]
                h = int(hashlib.blake2b(d["query"].encode(), digest_size=4).hexdigest(), 16)
                d["query"] = texts[h % len(texts)]
                turn_ids.append(d["event_id"])
                out.append(("turns", d["user_id"], json.dumps(d).encode()))
            else:
                d["turn_id"] = p + d["turn_id"]
                if d["signal"].get("kind") == "pairwise":
                    d["signal"] = {**d["signal"], "rejected_turn_id": p + d["signal"]["rejected_turn_id"]}
                fb_ids.append(d["event_id"])
                out.append(("feedback", d["user_id"], json.dumps(d).encode()))
            if len(out) >= n_events:
                break
        r += 1
    # a user's turns before its feedback (as in a live app); rounds stay in order
    return out, turn_ids, fb_ids


# --- processes -----------------------------------------------------------------------------------
class Child:
    """A prefstream CLI subprocess (ingest or router) that can be kill -9'd and restarted."""

    def __init__(self, name: str, args: list[str], s, logdir: Path):
        self.name, self.args, self.s, self.log = name, args, s, logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        env = child_env(self.s)
        env["OMP_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen([sys.executable, "-m", "stack.cli", *self.args], env=env, cwd=ROOT,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


class Graph:
    """The stack's FalkorDB server, kill -9'd and restarted on the same port and data dir."""

    def __init__(self, stack: PrivateStack):
        self.stack = stack

    @property
    def pid(self) -> int:
        return self.stack.graph.pid

    def kill9_and_restart(self, down_s: float) -> float:
        from stack import services

        os.kill(self.stack.graph.pid, signal.SIGKILL)
        try:
            os.waitpid(self.stack.graph.pid, 0)
        except ChildProcessError:
            pass
        time.sleep(down_s)
        t0 = time.monotonic()
        g = services.start_graph(self.stack.graph_port, self.stack.dir / "graph", self.stack.dir / "logs")
        self.stack.procs = [p for p in self.stack.procs if p is not self.stack.graph] + [g]
        self.stack.graph = g
        services.wait_graph(g, self.stack.graph_port, timeout=120)
        return time.monotonic() - t0


def graph_ids(s, label: str, key: str) -> tuple[int, int, set[str]]:
    """(nodes, distinct ids, ids) of one label, through the plain falkordb client."""
    from falkordb import FalkorDB

    db = FalkorDB(host="127.0.0.1", port=int(s.graph_uri.rsplit(":", 1)[1]))
    try:
        rows = db.select_graph(s.graph_name).ro_query(f"MATCH (n:{label}) RETURN n.{key}").result_set
    except Exception as exc:
        if "empty key" in str(exc):
            return 0, 0, set()
        raise
    finally:
        try:
            db.connection.close()
        except Exception:
            pass
    ids = [r[0] for r in rows]
    return len(ids), len(set(ids)), set(ids)


def graph_count(s, label: str) -> int:
    try:
        from falkordb import FalkorDB

        db = FalkorDB(host="127.0.0.1", port=int(s.graph_uri.rsplit(":", 1)[1]), socket_timeout=5)
        try:
            return int(db.select_graph(s.graph_name).ro_query(f"MATCH (n:{label}) RETURN count(n)").result_set[0][0])
        finally:
            db.connection.close()
    except Exception:
        return -1


def read_topic(s, topic: str, expect: int, timeout: float) -> list[bytes]:
    from kafka import KafkaConsumer

    from streams.kafka_config import consumer_kwargs

    c = KafkaConsumer(topic, **consumer_kwargs(s, group_id=None, max_partition_fetch_bytes=4 << 20))
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            n0 = len(got)
            for recs in c.poll(timeout_ms=300).values():
                got += [r.value for r in recs]
            if len(got) >= expect:
                if quiet_until is None:
                    quiet_until = time.monotonic() + 2.0
                elif len(got) == n0 and time.monotonic() > quiet_until:
                    break
    finally:
        c.close()
    return got


def quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank), rounded to 0.1."""
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


class ReplyCollector(threading.Thread):
    """Reads the decisions topic from its start while the run goes on: replies per request id, the first
    arrival time of each, and its kind. (Reading ~400k replies at the end instead was not reliable.)"""

    def __init__(self, s) -> None:
        super().__init__(daemon=True, name="replies")
        self.s = s
        self.count: Counter = Counter()
        self.arrived: dict[str, float] = {}
        self.kind: dict[str, str] = {}
        self.why: dict[str, str] = {}  # the error of each error reply (its reason, shortened)
        self.unknown = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        from streams import route_topics
        from streams.kafka_config import consumer_kwargs

        c = KafkaConsumer(**consumer_kwargs(self.s, group_id=None, max_partition_fetch_bytes=4 << 20))
        gen = route_topics.follow_replies(self.s, c, self._halt)  # every reply from the first on
        try:
            while not self._halt.is_set():
                if gen is not None and route_topics.current(self.s) != gen:
                    gen = route_topics.follow_replies(self.s, c, self._halt)
                for recs in c.poll(timeout_ms=200).values():
                    now = time.time()
                    for r in recs:
                        d = json.loads(r.value)
                        rid = d.get("request_id")
                        self.count[rid] += 1
                        self.arrived.setdefault(rid, now)
                        self.kind.setdefault(rid, "error" if d.get("error") else "shed" if d.get("shed") else
                                             "fallback" if d.get("fallback") else "decision")
                        if d.get("error"):
                            self.why.setdefault(rid, str(d["error"])[:80])
        finally:
            c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def wait_answered(self, ids: list[str], timeout: float, stall_s: float = 60.0) -> float:
        """Wait until every id has a reply, or ``timeout``, or no new reply for ``stall_s``; seconds waited."""
        t0 = last_t = time.monotonic()
        last_n = -1
        while time.monotonic() - t0 < timeout:
            n = sum(1 for r in ids if self.count[r])
            if n == len(ids):
                break
            if n != last_n:
                last_n, last_t = n, time.monotonic()
            elif time.monotonic() - last_t > stall_s:
                break
            time.sleep(1.0)
        return time.monotonic() - t0

    def summary(self, ids: list[str], sent_at: dict[str, float]) -> dict:
        lat = sorted(1000 * (self.arrived[r] - sent_at[r]) for r in ids if r in self.arrived)
        pct = (lambda q: quantile(lat, q) if lat else None)
        return {"requests": len(ids), "unanswered": sum(1 for r in ids if not self.count[r]),
                "answered_more_than_once": sum(1 for r in ids if self.count[r] > 1),
                "extra_replies": sum(max(0, self.count[r] - 1) for r in ids),
                "reply_kinds": dict(Counter(self.kind[r] for r in ids if r in self.kind)),
                "error_reasons": dict(Counter(self.why[r] for r in ids if r in self.why).most_common(5)),
                "latency_p50_ms": pct(0.5), "latency_p99_ms": pct(0.99), "latency_max_ms": lat[-1] if lat else None,
                "p99_by_10s": self.timeline(ids, sent_at)}

    def timeline(self, ids: list[str], sent_at: dict[str, float], step_s: float = 10.0) -> list[list[float]]:
        """[[start s, p99 ms, requests]] per ``step_s`` of send time: where in a run the slow replies were."""
        got = [(sent_at[r], 1000 * (self.arrived[r] - sent_at[r])) for r in ids if r in self.arrived]
        if not got:
            return []
        buckets: dict[int, list[float]] = {}  # by wall-clock step, so route-topic generation changes fall on edges
        for t, ms in got:
            buckets.setdefault(int(t // step_s), []).append(ms)
        first = min(buckets)
        return [[(b - first) * step_s, quantile(sorted(v), 0.99), len(v)] for b, v in sorted(buckets.items())]


# --- the run -------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000, help="input events (turns + feedback) to replay")
    ap.add_argument("--event-rate", type=float, default=150.0, help="events/s published during the chaos phase")
    ap.add_argument("--request-rate", type=float, default=4.0, help="route requests/s (chaos and soak)")
    ap.add_argument("--chaos-s", type=float, default=200.0, help="seconds of traffic with kills")
    ap.add_argument("--kills", default="ingest:2,router:2,graph:2", help="kill -9 counts per process")
    ap.add_argument("--graph-down-s", type=float, default=2.0, help="seconds FalkorDB stays down after a kill")
    ap.add_argument("--bgsave-before-graph-kill", action="store_true",
                    help="BGSAVE before each graph kill (narrows the RDB window; reported)")
    ap.add_argument("--drain-s", type=float, default=120.0, help="most seconds to wait for the graph to catch up")
    ap.add_argument("--soak-s", type=float, default=90.0, help="seconds of the fixed-rate soak (no kills)")
    ap.add_argument("--soak-event-rate", type=float, default=40.0)
    ap.add_argument("--soak-request-rate", type=float, default=None,
                    help="route requests/s during the soak (default: --request-rate)")
    ap.add_argument("--pool", type=int, default=64, help="distinct query texts")
    ap.add_argument("--no-replay", action="store_true", help="skip the recovery replay of the input topics")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--route-generation-s", type=int, default=10,
                    help="route topics per generation of this many seconds (streams/route_topics.py; 0: one topic; "
                         "10 is what `prefstream up` uses, each kept PREFSTREAM_ROUTE_KEEP_S = 20 s)")
    ap.add_argument("--event-generation-s", type=int, default=120,
                    help="turns and feedback topics per generation of this many seconds, deleted by the ingest once "
                         "read (streams/event_topics.py; 0: kept; 120 is what `prefstream up` uses)")
    ap.add_argument("--partitions", type=int, default=8,
                    help="partitions per topic (the local broker slows down as a partition grows)")
    ap.add_argument("--out", default="reliability", help="results name: bench/results/OUT.json and OUT.md")
    ap.add_argument("--restart-drain-s", type=float, default=45.0,
                    help="if events are missing after the drain: restart ingest once and wait this long")
    ap.add_argument("--fuzzed", type=int, default=None, help="fuzzed events of tests/reliability/test_fuzz.py (to report)")
    ap.add_argument("--fuzz-crashes", type=int, default=None, help="worker crashes in that test (to report)")
    ap.add_argument("--render", action="store_true", help="only re-write OUT.md and OUT.png from OUT.json")
    return ap.parse_args()


class Traffic:
    """Route requests and input events published at fixed rates from threads (the chaos and soak load).

    ``requests`` maps every request id sent to its send time, ``published`` counts the input events sent;
    setting ``stop_req`` stops the requester."""

    def __init__(self, s, client, rng: random.Random, chaos_events: list[tuple[str, str, bytes]]) -> None:
        self.s, self.client, self.rng = s, client, rng
        self.requests: dict[str, float] = {}
        self.stop_req = threading.Event()
        self.published = 0
        self.users = sorted({k for kind, k, _ in chaos_events if kind == "turns"})
        self.queries = sorted({json.loads(raw)["query"] for kind, _, raw in chaos_events[:2000] if kind == "turns"})

    def requester(self, rate: float, tag: str) -> None:
        i = 0
        t0 = time.monotonic()
        while not self.stop_req.is_set():
            rid = f"{tag}{i}"
            req = RouteRequest(request_id=rid, user_id=self.rng.choice(self.users[: max(1, len(self.users) // 4)]),
                               query=self.rng.choice(self.queries))
            self.client.publish(req)
            self.requests[rid] = time.time()
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))

    def publisher(self, evts, rate: float) -> None:
        t0 = time.monotonic()
        for i, (kind, key, raw) in enumerate(evts):
            self.client.publish_raw(getattr(self.s.topics, kind), raw, key=key)
            self.published += 1
            if i % 200 == 0:
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        self.client.flush(120)


@dataclass
class Rig:
    """The long-lived pieces of one run, set up once in ``main`` and shared by every phase."""

    args: argparse.Namespace
    rng: random.Random
    stack: PrivateStack
    s: Any  # the stack's settings
    ingest: Child
    router: Child
    graph: Graph
    collector: ReplyCollector
    traffic: Traffic


def make_workload(args: argparse.Namespace, t_start: float) -> tuple[list, list]:
    """(chaos events, soak events): the first ``--events`` events, then those of the soak."""
    soak_events = int(args.soak_s * args.soak_event_rate)
    events, turn_ids, fb_ids = workload(args.events + soak_events, args.seed, args.pool)
    chaos_events, soak_evts = events[:args.events], events[args.events:]
    LOG(f"workload: {len(events)} events ({len(turn_ids)} turns, {len(fb_ids)} feedback), "
        f"{time.monotonic() - t_start:.1f} s")
    return chaos_events, soak_evts


def kill_plan(args: argparse.Namespace, rng: random.Random) -> tuple[list[str], list[float]]:
    """(process to kill, seconds into the chaos phase) of every kill, spread over its middle 70 %."""
    counts = dict(kv.split(":") for kv in args.kills.split(",") if kv)
    plan = [name for name, n in counts.items() for _ in range(int(n))]
    rng.shuffle(plan)
    slots = len(plan)
    first, last = 0.15 * args.chaos_s, 0.85 * args.chaos_s
    times = [first + (last - first) * (i + rng.uniform(0.2, 0.8)) / max(slots, 1) for i in range(slots)]
    return plan, times


def kill_and_restart(rig: Rig, name: str) -> dict:
    """kill -9 the process ``name`` (ingest, router or graph) and restart it; what to record about it."""
    k: dict = {}
    if name == "ingest":
        k["was_alive"] = rig.ingest.alive()
        rig.ingest.kill9()
        time.sleep(1.0)
        rig.ingest.start()
    elif name == "router":
        k["was_alive"] = rig.router.alive()
        rig.router.kill9()
        time.sleep(1.0)
        rig.router.start()
    elif name == "graph":
        if rig.args.bgsave_before_graph_kill:
            import redis

            redis.Redis(port=rig.stack.graph_port).bgsave()
            time.sleep(0.5)
            k["bgsave"] = True
        k["restart_s"] = round(rig.graph.kill9_and_restart(rig.args.graph_down_s), 2)
        k["turns_in_graph_after_restart"] = graph_count(rig.s, "Turn")
    return k


def chaos_phase(rig: Rig, chaos_events: list, res: dict) -> list[dict]:
    """Publish the chaos events and route requests while killing processes on the kill plan; the kills."""
    args, traffic = rig.args, rig.traffic
    plan, times = kill_plan(args, rig.rng)
    kills: list[dict] = []
    t_chaos = time.monotonic()
    pub = threading.Thread(target=traffic.publisher, args=(chaos_events, args.event_rate), daemon=True)
    req = threading.Thread(target=traffic.requester, args=(args.request_rate, "c"), daemon=True)
    pub.start()
    req.start()
    LOG(f"chaos: {len(chaos_events)} events at {args.event_rate}/s, requests at {args.request_rate}/s, "
        f"kills {plan} at {[round(t) for t in times]} s")
    for name, at in zip(plan, times):
        time.sleep(max(0.0, t_chaos + at - time.monotonic()))
        k = {"what": name, "at_s": round(time.monotonic() - t_chaos, 1), "published_before": traffic.published,
             "turns_in_graph_before": graph_count(rig.s, "Turn")}
        k.update(kill_and_restart(rig, name))
        LOG(f"  kill -9 {k}")
        kills.append(k)
    time.sleep(max(0.0, t_chaos + args.chaos_s - time.monotonic()))
    traffic.stop_req.set()
    req.join()
    pub.join(timeout=max(5.0, args.drain_s))
    res["chaos_published"] = traffic.published
    res["chaos_s_actual"] = round(time.monotonic() - t_chaos, 1)
    LOG(f"chaos done: published {traffic.published} in {res['chaos_s_actual']} s; draining")
    return kills


def drain(rig: Rig, chaos_events: list, res: dict) -> tuple[int, int]:
    """Wait until the graph stops growing or has everything; (turns, feedback) of the chaos events."""
    s, ingest = rig.s, rig.ingest
    n_turns = sum(1 for kind, _, _ in chaos_events if kind == "turns")
    n_fb = len(chaos_events) - n_turns
    t_drain = time.monotonic()
    last_total, still_since = -1, time.monotonic()
    while time.monotonic() - t_drain < rig.args.drain_s:
        nt, nf = graph_count(s, "Turn"), graph_count(s, "Feedback")
        if nt >= n_turns and nf >= n_fb:
            break
        if nt + nf != last_total:
            last_total, still_since = nt + nf, time.monotonic()
        elif time.monotonic() - still_since > 25 and ingest.alive():
            break  # no progress for 25 s: what is missing now is lost, not pending
        time.sleep(2.0)
    res["drain_s"] = round(time.monotonic() - t_drain, 1)
    return n_turns, n_fb


def ingest_after_chaos(s, chaos_events: list, res: dict) -> tuple[set[str], set[str], set[str], set[str]]:
    """(turn ids, feedback ids, missing turn ids, missing feedback ids) of the chaos events in the graph."""
    chaos_turn_ids = {json.loads(raw)["event_id"] for kind, _, raw in chaos_events if kind == "turns"}
    chaos_fb_ids = {json.loads(raw)["event_id"] for kind, _, raw in chaos_events if kind == "feedback"}
    tn, td, tids = graph_ids(s, "Turn", "turn_id")
    fn, fd, fids = graph_ids(s, "Feedback", "feedback_id")
    missing_t, missing_f = chaos_turn_ids - tids, chaos_fb_ids - fids
    res["ingest_after_chaos"] = {"turns_expected": len(chaos_turn_ids), "turns_nodes": tn, "turns_distinct": td,
                                 "feedback_expected": len(chaos_fb_ids), "feedback_nodes": fn,
                                 "feedback_distinct": fd, "missing_turns": len(missing_t),
                                 "missing_feedback": len(missing_f),
                                 "missing_examples": sorted(missing_t)[:5] + sorted(missing_f)[:5]}
    LOG(f"after chaos: {res['ingest_after_chaos']}")
    return chaos_turn_ids, chaos_fb_ids, missing_t, missing_f


def restart_ingest(rig: Rig, chaos_turn_ids: set[str], chaos_fb_ids: set[str], n_turns: int, n_fb: int,
                   res: dict) -> tuple[set[str], set[str]]:
    """A stalled worker (e.g. Faust agents crashed by a graph outage) is not the same as lost data: restart
    the worker as an operator would and see what still arrives from uncommitted offsets. The ids still
    missing (turns, feedback)."""
    s = rig.s
    rig.ingest.stop()
    rig.ingest.start()
    t1 = time.monotonic()
    while time.monotonic() - t1 < rig.args.restart_drain_s:
        if graph_count(s, "Turn") >= n_turns and graph_count(s, "Feedback") >= n_fb:
            break
        time.sleep(2.0)
    _, _, tids = graph_ids(s, "Turn", "turn_id")
    _, _, fids = graph_ids(s, "Feedback", "feedback_id")
    res["after_ingest_restart"] = {"seconds": round(time.monotonic() - t1, 1),
                                   "missing_turns": len(chaos_turn_ids - tids),
                                   "missing_feedback": len(chaos_fb_ids - fids)}
    LOG(f"after an extra ingest restart: {res['after_ingest_restart']}")
    return chaos_turn_ids - tids, chaos_fb_ids - fids


def dead_letters_and_positions(s, chaos_events: list, missing: set[str], res: dict) -> None:
    """The dead-letter topic, and where in the stream the ``missing`` events were (by publish order), to tie
    them to a kill."""
    dead = read_topic(s, s.topics.dead_letter, 10**9, timeout=30)
    res["dead_letters"] = {"count": len(dead), "reasons": dict(Counter(
        json.loads(d)["reason"].split(":")[0][:60] for d in dead).most_common(5))}
    LOG(f"dead letters: {res['dead_letters']}")
    order = {json.loads(raw)["event_id"]: i for i, (_, _, raw) in enumerate(chaos_events)}
    miss_pos = sorted(order[i] for i in missing)
    res["missing_publish_positions"] = ([miss_pos[0], miss_pos[-1]] if miss_pos else [])


def rss_sample(pids: dict[str, int], t_soak: float) -> dict:
    """Seconds into the soak and the RSS (kB) of every process."""
    return {"t_s": round(time.monotonic() - t_soak, 1), **{k: rss_kb(p) for k, p in pids.items()}}


WARM_S = 120.0  # seconds into the soak after which RSS growth is reported separately


def rss_growth(pids: dict[str, int], samples: list[dict]) -> dict:
    """RSS first / last MB and growth % of every process with at least 4 samples."""
    growth = {}
    for k in pids:
        xs = [x[k] for x in samples if x[k]]
        if len(xs) >= 4:
            a, b = sum(xs[1:3]) / 2, sum(xs[-2:]) / 2  # skip the very first sample (warm-up)
            growth[k] = {"first_mb": round(a / 1024, 1), "last_mb": round(b / 1024, 1),
                         "growth_pct": round(100 * (b - a) / a, 2)}
            later = [x[k] for x in samples if x[k] and x["t_s"] >= WARM_S]
            if len(later) >= 4:  # what grew once the fixed-size buffers (e.g. the route-topic window) had filled
                c = sum(later[:2]) / 2
                growth[k].update({f"at_{WARM_S:.0f}s_mb": round(c / 1024, 1),
                                  f"growth_after_{WARM_S:.0f}s_pct": round(100 * (b - c) / c, 2)})
    return growth


def soak_phase(rig: Rig, soak_evts: list, res: dict) -> dict:
    """Fixed rates, no kills, RSS of every process sampled every 5 s; the RSS growth per process."""
    args, traffic, stack = rig.args, rig.traffic, rig.stack
    pids = {"ingest": rig.ingest.pid, "router": rig.router.pid, "broker": stack.broker.pid,
            "graph": stack.graph.pid, "bench": os.getpid()}
    samples: list[dict] = []
    traffic.stop_req.clear()
    n_req_before = len(traffic.requests)
    t_soak = time.monotonic()
    pub2 = threading.Thread(target=traffic.publisher, args=(soak_evts, args.soak_event_rate), daemon=True)
    soak_rate = args.request_rate if args.soak_request_rate is None else args.soak_request_rate
    req2 = threading.Thread(target=traffic.requester, args=(soak_rate, "s"), daemon=True)
    pub2.start()
    req2.start()
    while time.monotonic() - t_soak < args.soak_s:
        samples.append(rss_sample(pids, t_soak))
        time.sleep(5.0)
    traffic.stop_req.set()
    req2.join()
    pub2.join(timeout=30)
    samples.append(rss_sample(pids, t_soak))
    growth = rss_growth(pids, samples)
    soak_ids = list(traffic.requests)[n_req_before:]
    waited = rig.collector.wait_answered(soak_ids, timeout=600)
    res["soak"] = {"seconds": round(time.monotonic() - t_soak, 1), "requests": len(soak_ids),
                   "events": len(soak_evts), "request_rate": soak_rate, "waited_after_s": round(waited, 1),
                   **rig.collector.summary(soak_ids, traffic.requests),
                   "rss": growth, "samples": samples,
                   "processes_alive": {"ingest": rig.ingest.alive(), "router": rig.router.alive()}}
    LOG(f"soak: { {k: v for k, v in res['soak'].items() if k != 'samples'} }")
    return growth


def recover(rig: Rig, chaos_turn_ids: set[str], chaos_fb_ids: set[str], soak_evts: list, res: dict) -> None:
    """Count what is in the graph at the end; if anything is missing, replay the input topics from the start
    (idempotent writes) and count again."""
    s = rig.s
    all_turns = chaos_turn_ids | {json.loads(raw)["event_id"] for kind, _, raw in soak_evts if kind == "turns"}
    all_fb = chaos_fb_ids | {json.loads(raw)["event_id"] for kind, _, raw in soak_evts if kind == "feedback"}
    time.sleep(5)
    tn, td, tids = graph_ids(s, "Turn", "turn_id")
    fn, fd, fids = graph_ids(s, "Feedback", "feedback_id")
    res["ingest_final"] = {"turns_expected": len(all_turns), "turns_nodes": tn, "turns_distinct": td,
                           "feedback_expected": len(all_fb), "feedback_nodes": fn, "feedback_distinct": fd,
                           "missing": len(all_turns - tids) + len(all_fb - fids),
                           "duplicated": (tn - td) + (fn - fd)}
    if not rig.args.no_replay and res["ingest_final"]["missing"]:
        rig.ingest.stop()
        t_rep = time.monotonic()
        replay_topics(s)
        tn, td, tids = graph_ids(s, "Turn", "turn_id")
        fn, fd, fids = graph_ids(s, "Feedback", "feedback_id")
        res["after_replay"] = {"seconds": round(time.monotonic() - t_rep, 1),
                               "missing": len(all_turns - tids) + len(all_fb - fids),
                               "duplicated": (tn - td) + (fn - fd)}
        LOG(f"replay: {res['after_replay']}")


def summarize(rig: Rig, res: dict, kills: list[dict], growth: dict, n_events: int, lost_after_chaos: int,
              t_start: float) -> None:
    """The headline numbers of the run, added to ``res``."""
    args = rig.args
    rt = res["routing_after_chaos"]
    res.update({
        "events": n_events,
        "lost": res["ingest_final"]["missing"],
        "lost_after_chaos": lost_after_chaos,
        "dead_lettered": res["dead_letters"]["count"],
        "duplicated": res["ingest_final"]["duplicated"],
        "requests": rt["requests"] + res["soak"]["requests"],
        "unanswered": rt["unanswered"] + res["soak"]["unanswered"],
        "answered_more_than_once": rt["answered_more_than_once"] + res["soak"]["answered_more_than_once"],
        "kills": kills,
        "soak_minutes": round(res["soak"]["seconds"] / 60, 2),
        "rss_growth_pct": {k: v["growth_pct"] for k, v in growth.items()},
        "bgsave_before_graph_kill": args.bgsave_before_graph_kill,
        "ingest_restarts": rig.ingest.starts - 1, "router_restarts": rig.router.starts - 1,
        "total_s": round(time.monotonic() - t_start, 1),
        "settings": {k: v for k, v in vars(args).items()},
    })
    res["fuzzed"], res["crashes"] = args.fuzzed, args.fuzz_crashes


def wait_catalog(s, n: int, timeout: float = 180.0) -> None:
    """Wait until the ingest has written the ``n`` registered LLMs to the graph: routing starts on a registered
    catalog, as in a deployment (a request before it gets the error reply "no LLM is registered", which is not
    what the kill chaos measures)."""
    end = time.monotonic() + timeout
    while graph_count(s, "LLM") < n:
        if time.monotonic() > end:
            raise RuntimeError(f"the ingest did not register the {n} LLMs within {timeout:.0f} s")
        time.sleep(0.5)


def run_phases(rig: Rig, chaos_events: list, soak_evts: list, t_start: float, res: dict) -> None:
    """Chaos, drain, loss / reply checks, soak, recovery; every result goes into ``res``."""
    kills = chaos_phase(rig, chaos_events, res)
    n_turns, n_fb = drain(rig, chaos_events, res)
    chaos_turn_ids, chaos_fb_ids, missing_t, missing_f = ingest_after_chaos(rig.s, chaos_events, res)
    if missing_t or missing_f:
        missing_t, missing_f = restart_ingest(rig, chaos_turn_ids, chaos_fb_ids, n_turns, n_fb, res)
    dead_letters_and_positions(rig.s, chaos_events, missing_t | missing_f, res)

    # --- replies: exactly one per route request --------------------------------------------
    chaos_ids = list(rig.traffic.requests)
    rig.collector.wait_answered(chaos_ids, timeout=300)
    res["routing_after_chaos"] = rig.collector.summary(chaos_ids, rig.traffic.requests)
    LOG(f"routing: {res['routing_after_chaos']}")

    growth = soak_phase(rig, soak_evts, res)
    recover(rig, chaos_turn_ids, chaos_fb_ids, soak_evts, res)
    summarize(rig, res, kills, growth, len(chaos_events) + len(soak_evts), len(missing_t) + len(missing_f), t_start)


def main() -> None:
    args = parse_args()
    if args.render:
        render(args.out)
        return
    t_start = time.monotonic()
    rng = random.Random(args.seed)

    from streams.client import PrefstreamClient
    from streams.kafka_config import create_topics

    chaos_events, soak_evts = make_workload(args, t_start)
    stack = PrivateStack("reliability")
    children: list[Child] = []
    collector: ReplyCollector | None = None
    res: dict = {"command": command_line(), "machine": machine_facts()}
    try:
        s = stack.settings(kafka_partitions=args.partitions, router_workers=0, unknown_llm_grace_s=30.0,
                           route_generation_s=args.route_generation_s, event_generation_s=args.event_generation_s)
        create_topics(s)
        publish_fixed_model(s.model_dir)
        logdir = stack.dir / "logs"
        ingest = Child("ingest", ["ingest", "--loglevel", "warning"], s, logdir)
        router = Child("router", ["router", "--workers", "0", "--loglevel", "warning"], s, logdir)
        children += [ingest, router]
        graph = Graph(stack)
        client = PrefstreamClient(s)
        for e in llm_events():
            client.publish(e)
        client.flush()
        ingest.start()
        router.start()
        wait_catalog(s, len(llm_events()))
        collector = ReplyCollector(s)
        collector.start()
        traffic = Traffic(s, client, rng, chaos_events)
        run_phases(Rig(args, rng, stack, s, ingest, router, graph, collector, traffic), chaos_events, soak_evts,
                   t_start, res)
        client.close()
    finally:
        teardown(collector, children, stack)
    keep_overload(res, args.out)
    write_json(RESULTS / f"{args.out}.json", res)
    write_report(res, args.out)
    LOG(f"done in {time.monotonic() - t_start:.0f} s -> bench/results/{args.out}.json")


def keep_overload(res: dict, out: str) -> None:
    """Carry bench/overload.py's keys ("overload...") over from the previous OUT.json (its own run writes them)."""
    path = RESULTS / f"{out}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    res.update({k: v for k, v in old.items() if k.startswith("overload")})


def read_overload_md(out: str) -> str:
    """bench/overload.py's section of OUT.md, to put back after this run rewrites the file."""
    path = RESULTS / f"{out}.md"
    text = path.read_text() if path.exists() else ""
    i = text.find("\n## Overload")
    return text[i:] if i >= 0 else ""


def teardown(collector: "ReplyCollector | None", children: list[Child], stack: PrivateStack) -> None:
    """Stop what a run started: the reply collector, the app processes, then the broker and graph."""
    if collector is not None:
        collector.stop()
    for c in children:
        c.stop()
    stack.stop()


def replay_topics(s) -> None:
    """Re-ingest the input topics from offset 0 with the real Ingestor (what resetting the ingest group's
    offsets would do): every write is a MERGE on the event id, so this only fills gaps."""
    from kafka import KafkaConsumer

    from graphstore import open_store
    from prefstream.encoder import TextEncoder
    from streams.ingest import Ingestor, RawMessage
    from streams.kafka_config import consumer_kwargs

    from kafka import KafkaAdminClient

    from streams import event_topics

    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    kept = event_topics.generations(s, admin.list_topics())  # those not yet deleted (event generations on)
    admin.close()
    store = open_store(s)
    ing = Ingestor(store, TextEncoder.from_settings(s), s.max_text_chars, unknown_llm_grace_s=0)
    inputs = [(s.topics.catalog, ing.llms), (s.topics.turns, ing.turns), (s.topics.feedback, ing.feedback)]
    inputs += [(t, ing.turns if event_topics.parse(s, t)[0] == s.topics.turns else ing.feedback) for t in kept]
    for topic, fn in inputs:
        c = KafkaConsumer(topic, **consumer_kwargs(s, group_id=None, max_poll_records=1000))
        idle = 0
        try:
            while idle < 3:
                batch = [RawMessage(r.value, topic, r.partition, r.offset)
                         for recs in c.poll(timeout_ms=1000).values() for r in recs]
                if not batch:
                    idle += 1
                    continue
                idle = 0
                fn(batch)
        finally:
            c.close()
    store.close()


def write_md(res: dict, path: Path) -> None:
    a, r, so = res["ingest_after_chaos"], res["routing_after_chaos"], res["soak"]
    lines = [
        "# Reliability under kill -9 (ingest worker, router, FalkorDB) and a soak",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: 2 shared cores, load average {res['machine'].get('loadavg_1_5_15')}, "
        f"commit {res['machine'].get('git_commit')}, {res['machine'].get('date_utc')}. Total {res['total_s']} s.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| input events replayed (turns + feedback) | {res['events']} |",
        f"| lost after the chaos phase (not in the graph after the drain and one extra ingest restart) | {res['lost_after_chaos']} |",
        f"| lost at the end (before any replay) | {res['lost']} |",
        f"| dead-lettered (all input was valid) | {res['dead_lettered']}: {res['dead_letters']['reasons']} |",
        f"| lost after replaying the input topics from offset 0 | {res.get('after_replay', {}).get('missing', 'no replay needed')} |",
        f"| duplicated nodes (count - distinct ids, Turn + Feedback) | {res['duplicated']} |",
        f"| route requests | {res['requests']} |",
        f"| unanswered | {res['unanswered']} |",
        f"| answered more than once | {res['answered_more_than_once']} |",
        f"| reply kinds during chaos | {r['reply_kinds']} |",
        f"| kills (kill -9) | {len(res['kills'])}: " + ", ".join(f"{k['what']}@{k['at_s']}s" for k in res['kills']) + " |",
        f"| BGSAVE before graph kills | {res['bgsave_before_graph_kill']} |",
        f"| soak | {res['soak_minutes']} min, {so['requests']} requests, {so['events']} events, "
        f"unanswered {so['unanswered']}, answered twice {so['answered_more_than_once']}, reply latency p50 / p99 "
        f"{so.get('latency_p50_ms')} / {so.get('latency_p99_ms')} ms |",
        f"| RSS growth over the soak, % | {res['rss_growth_pct']} |",
        f"| fuzzed events (tests/reliability/test_fuzz.py) | {res.get('fuzzed', '-')} |",
        f"| worker crashes under fuzz | {res.get('crashes', '-')} |",
        "",
        "After chaos: " + json.dumps(a),
        "",
        "After one more ingest restart: " + json.dumps(res.get("after_ingest_restart")),
        "",
        "Kills: " + json.dumps(res["kills"]),
        "",
        "RSS (MB): " + json.dumps(so["rss"]),
        "",
        f"![RSS over the soak]({path.stem}.png)",
        "",
        res.get("notes", ""),
        "",
        "The broker (Tansu, `memory://` storage) and the graph server keep every message / node they are given, so",
        "their RSS grows with the data of the soak (every request and decision is a Kafka record, every decision an",
        "audit node); the leak check is the flat RSS of the processes that keep no data: ingest, router and bench.",
        "",
    ]
    path.write_text("\n".join(lines) + "\n")


def plot_rss(res: dict, path: Path) -> None:
    """RSS of every process over the soak (MB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = res["soak"]["samples"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for name in [k for k in samples[0] if k != "t_s"]:
        pts = [(x["t_s"] / 60, x[name] / 1024) for x in samples if x.get(name)]
        if pts:
            ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("soak minutes")
    ax.set_ylabel("RSS MB")
    ax.set_title(f"RSS over a {res['soak_minutes']} min soak")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render(out: str) -> None:
    """Re-write OUT.md and OUT.png from OUT.json (e.g. after changing the report)."""
    write_report(json.loads((RESULTS / f"{out}.json").read_text()), out)


def write_report(res: dict, out: str) -> None:
    """OUT.md (keeping bench/overload.py's section) and OUT.png."""
    overload_md = read_overload_md(out)
    write_md(res, RESULTS / f"{out}.md")
    if overload_md:
        with open(RESULTS / f"{out}.md", "a") as fh:
            fh.write(overload_md)
    plot_rss(res, RESULTS / f"{out}.png")


if __name__ == "__main__":
    main()
