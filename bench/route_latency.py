"""Route latency: request -> decision round trip through the broker, open loop at fixed rates.

Starts its own Tansu broker and FalkorDB server on free ports (temp dir) and, per configuration, the router
(RouteLoop + workers.build.build_engine: real graph store, real encoder, fixed-seed GMTRouter from a model
registry) as a separate process, so client and router do not share a GIL. The client is the SDK
(PrefstreamClient.route_async) driven by an open-loop sender: request i is due at t0 + i/rate and its
latency is measured from that due time (not from when it was actually sent), so a slow sender or router
shows up as latency, not as a lower rate.

The floor: a bare broker echo at the same rates (raw bytes produce -> a separate echo process consumes and
produces -> client consumes; no parsing, no work), same consumer/producer settings.

Graph: --users simulated users (trainer/simulate.py over ../shared/data/llmrouter), each with its first
--history turns (+ their feedback) preloaded with store.upsert_*; the 9 LLMs of llm_candidates.json registered.
Queries: real queries of the data set; with probability --repeat-frac from a hot pool of --hot texts
(warmed once, then encoder-cache hits), otherwise a text never sent before in this run (an encoder miss;
after the 5,608 real texts are used up, a real text + " (vN)").

    python bench/route_latency.py                             # main: 50/200/500 req/s x 30 s + echo
    python bench/route_latency.py --only sweep                # fetch wait / batch settings at 200 req/s
    python bench/route_latency.py --rates 200 --duration 5    # quick
Writes bench/results/route_latency.{json,md,png}; a --only run merges its part into an existing json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

# run as a script, bench/ comes first on sys.path; keep the project root first instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (RESULTS, ROOT, CpuMeter, child_env, clean_env, command_line, llm_events, machine_facts, pct,  # noqa: E402
                    private_stack, publish_fixed_model, write_json)

os.chdir(ROOT)


# ------------------------------------------------------------------------------------------------ servers
def serve_router(stats_path: str, hot_path: str | None, member: tuple[int, int] = (0, 1)) -> None:
    """Child process: RouteLoop(build_engine) until SIGTERM; per-batch timings go to stats_path.

    The hot query pool's embeddings are put into the engine's encoder cache from the project's embedding
    cache (var/cache, same encoder), as a long-running router would have them; other texts are misses."""
    from prefstream.config import Settings
    from streams.route_loop import RouteLoop
    from workers.build import build_engine

    s = Settings()
    engine = build_engine(s)
    if hot_path:
        from bench.common import cached_embeddings

        hot = json.loads(Path(hot_path).read_text())
        engine.encoder.prime(hot, cached_embeddings(hot))
    rows: list[dict] = []
    cur: dict = {}

    def timed(obj, name, key):
        fn = getattr(obj, name)

        def wrapper(*a, **kw):
            t = time.perf_counter()
            before = engine.encoder.encoded
            try:
                return fn(*a, **kw)
            finally:
                cur[key] = cur.get(key, 0.0) + (time.perf_counter() - t) * 1000
                if key == "encode_ms":
                    cur["encoded"] = cur.get("encoded", 0) + engine.encoder.encoded - before
        setattr(obj, name, wrapper)

    timed(engine.store, "user_subgraphs", "subgraph_ms")
    timed(engine.store, "record_decisions", "record_ms")
    timed(engine.encoder, "encode", "encode_ms")
    timed(engine, "decide", "decide_ms")
    wrapped_scorer = [None]
    decide = engine.decide

    def decide_with_scorer_timed(requests, early=None):  # a new model version gets its decide_batch timed too
        sc = engine.models.scorer
        if sc is not None and wrapped_scorer[0] is not sc:
            timed(sc, "decide_batch", "score_ms")
            wrapped_scorer[0] = sc
        return decide(requests, early=early)

    engine.decide = decide_with_scorer_timed

    def batch_done(n: int, handle_ms: float) -> None:  # RouteLoop's hook, after each micro-batch
        rows.append({**cur, "t": time.time(), "n": n, "handle_ms": handle_ms})
        cur.clear()

    loop = RouteLoop(s, engine, on_batch=batch_done, member=member)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    ready = threading.Event()
    th = threading.Thread(target=loop.run, args=(ready,), daemon=True)
    th.start()
    ready.wait(60)
    Path(stats_path + ".ready").write_text("ok")
    while th.is_alive():
        th.join(0.5)
    Path(stats_path).write_text(json.dumps({"batches": rows, "model_version": getattr(engine.models.scorer, "version", None)}))


def serve_echo(req_topic: str, rep_topic: str) -> None:
    """Child process: bare echo, requests topic -> replies topic, raw bytes, no work."""
    from kafka import KafkaConsumer, KafkaProducer

    from prefstream.config import Settings
    from streams.kafka_config import consumer_kwargs, producer_kwargs

    s = Settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = KafkaConsumer(req_topic, **consumer_kwargs(s, "bench-echo", max_poll_records=s.route_batch_size))
    producer = KafkaProducer(**producer_kwargs(s))
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=100)
        recs = [r for rs in batch.values() for r in rs]
        if not recs:
            continue
        for r in recs:
            producer.send(rep_topic, key=r.key, value=r.value)
        producer.flush()
        consumer.commit()
    consumer.close()
    producer.close()


# ------------------------------------------------------------------------------------------------ client side
class Waiter:
    """Completion times of requests i, set from other threads."""

    def __init__(self, n: int):
        self.done = np.full(n, np.nan)
        self.sent = np.full(n, np.nan)
        self.due = np.full(n, np.nan)
        self.count = 0
        self.lock = threading.Lock()

    def complete(self, i: int) -> None:
        t = time.perf_counter()
        with self.lock:
            if np.isnan(self.done[i]):
                self.done[i] = t
                self.count += 1


def open_loop(rate: float, duration: float, send, w: Waiter) -> None:
    n = len(w.done)
    t0 = time.perf_counter() + 0.02
    for i in range(n):
        due = t0 + i / rate
        d = due - time.perf_counter()
        if d > 0:
            time.sleep(d)
        w.due[i] = due
        w.sent[i] = time.perf_counter()
        send(i)


def wait_all(w: Waiter, timeout: float) -> None:
    end = time.monotonic() + timeout
    while w.count < len(w.done) and time.monotonic() < end:
        time.sleep(0.02)


def summarize(w: Waiter) -> dict:
    ok = ~np.isnan(w.done)
    lat = (w.done[ok] - w.due[ok]) * 1000
    lag = (w.sent - w.due) * 1000
    return {"sent": int(len(w.done)), "answered": int(ok.sum()), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
            "p99_ms": pct(lat, 99), "max_ms": pct(lat, 100), "mean_ms": round(float(lat.mean()), 3) if len(lat) else None,
            "sender_lag_p50_ms": pct(lag, 50), "sender_lag_p99_ms": pct(lag, 99)}


class EchoClient:
    def __init__(self, s, req_topic: str, rep_topic: str):
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        from streams.kafka_config import consumer_kwargs, producer_kwargs

        self.req_topic = req_topic
        self.producer = KafkaProducer(**producer_kwargs(s))
        self.consumer = KafkaConsumer(**consumer_kwargs(s, group_id=None))
        parts = None
        while parts is None:
            parts = self.consumer.partitions_for_topic(rep_topic)
            time.sleep(0.05) if parts is None else None
        tps = [TopicPartition(rep_topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)
        self.w: Waiter | None = None
        self.prefix = b""
        self.closed = threading.Event()
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _read(self) -> None:
        while not self.closed.is_set():
            for rs in self.consumer.poll(timeout_ms=100).values():
                for r in rs:
                    w = self.w
                    if w is not None and r.key and r.key.startswith(self.prefix):
                        w.complete(int(r.key[len(self.prefix):]))

    def run(self, rate: float, duration: float, payload: bytes) -> Waiter:
        w = Waiter(int(rate * duration))
        self.prefix = f"{uuid.uuid4().hex[:6]}-".encode()
        self.w = w

        def send(i):
            # as the SDK's route_async does: linger 0, no flush (a flush per message would make the sender, not
            # the broker, the bottleneck of this floor)
            self.producer.send(self.req_topic, key=self.prefix + str(i).encode(), value=payload)
        open_loop(rate, duration, send, w)
        wait_all(w, 15)
        return w

    def close(self) -> None:
        self.closed.set()
        self.th.join(5)
        self.consumer.close()
        self.producer.close()


class Queries:
    def __init__(self, texts: list[str], users: list[str], hot: int, repeat_frac: float, seed: int = 1):
        self.rng = np.random.default_rng(seed)
        order = self.rng.permutation(len(texts))
        self.hot = [texts[i] for i in order[:hot]]
        self.fresh = [texts[i] for i in order[hot:]]
        self.users = users
        self.repeat_frac = repeat_frac
        self.n_fresh = 0

    def draw(self) -> tuple[str, str, bool]:
        u = self.users[int(self.rng.integers(len(self.users)))]
        if self.rng.random() < self.repeat_frac:
            return u, self.hot[int(self.rng.integers(len(self.hot)))], True
        k = self.n_fresh
        self.n_fresh += 1
        q = self.fresh[k % len(self.fresh)]
        if k >= len(self.fresh):
            q = f"{q} (v{k // len(self.fresh)})"
        return u, q, False


# ------------------------------------------------------------------------------------------------ orchestration
OMP_THREADS: str | None = None  # --omp-threads: OMP_NUM_THREADS for the router / echo processes
ROUTERS = 1  # --routers: router processes, worker i of n reading its static share of the partitions


def start_child(args: list[str], s, log: Path) -> subprocess.Popen:
    env = child_env(s)
    if OMP_THREADS:
        env["OMP_NUM_THREADS"] = OMP_THREADS
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def end_child(p: subprocess.Popen, timeout: float = 20) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def preload(stack, s, n_users: int, history: int) -> tuple[list[str], list[str], dict]:
    """Users with their first `history` turns (+feedback) and the 9 LLMs; returns (users, query texts, facts)."""
    from graphstore import open_store
    from prefstream.events import ChatTurn, Feedback
    from trainer.simulate import SimConfig, Simulator

    from bench.common import cached_embeddings

    t0 = time.time()
    sim = Simulator(SimConfig(n_users=n_users, n_new_users=0, seed=0))
    evs = sim.events()
    per_user: dict[str, list] = {}
    for e in evs:
        if isinstance(e, ChatTurn) and len(per_user.setdefault(e.user_id, [])) < history:
            per_user[e.user_id].append(e)
    turns = [t for ts in per_user.values() for t in ts]
    ids = {t.event_id for t in turns}
    fbs = [e for e in evs if isinstance(e, Feedback) and e.turn_id in ids
           and (getattr(e.signal, "rejected_turn_id", None) in (None, *ids))]
    store = open_store(s)
    store.ensure_schema()
    llms = llm_events()
    store.upsert_llms(list(zip(llms, cached_embeddings([m.description for m in llms]))))
    qemb = cached_embeddings([t.query for t in turns])
    store.upsert_turns([(t, qemb[i], None) for i, t in enumerate(turns)])
    store.upsert_feedback(fbs)
    facts = {"users": len(per_user), "turns": store.count("Turn"), "feedback_events": len(fbs),
             "llms": len(store.llm_catalog()), "seconds": round(time.time() - t0, 1)}
    store.close()
    return sorted(per_user), list(sim.data.queries), facts


def router_window(batches: list[dict], t0: float, t1: float) -> dict:
    rows = [b for b in batches if t0 <= b["t"] <= t1]
    if not rows:
        return {}
    out = {"batches": len(rows), "batch_size_mean": round(float(np.mean([b["n"] for b in rows])), 2),
           "batch_size_max": int(max(b["n"] for b in rows)),
           "encoded_texts": int(sum(b.get("encoded", 0) for b in rows))}
    for k in ("handle_ms", "decide_ms", "subgraph_ms", "encode_ms", "score_ms", "record_ms"):
        xs = [b.get(k, 0.0) for b in rows]
        out[k] = {"p50": pct(xs, 50), "p99": pct(xs, 99), "mean": round(float(np.mean(xs)), 3)}
    enc = [b["encode_ms"] for b in rows if b.get("encoded")]
    out["encode_ms_batches_with_new_text"] = {"n": len(enc), "p50": pct(enc, 50), "p99": pct(enc, 99)}
    return out


def start_router(s, name: str, queries: Queries, logdir: Path, member: tuple[int, int] = (0, 1)
                 ) -> tuple[subprocess.Popen, str, float]:
    """Write the hot query pool and start router child ``member`` (index, count); returns (process, stats path,
    start time)."""
    stats = str(logdir / f"router-{name}-{uuid.uuid4().hex[:6]}.json")
    t_start = time.monotonic()
    hot_file = logdir / "hot.json"
    hot_file.write_text(json.dumps(queries.hot))
    router = start_child(["--serve", "router", "--stats", stats, "--hot-file", str(hot_file),
                          "--member", str(member[0]), str(member[1])], s, logdir / f"router-{name}-{member[0]}.log")
    return router, stats, t_start


def wait_router_ready(router: subprocess.Popen, stats: str, name: str, logdir: Path) -> None:
    while not Path(stats + ".ready").exists():
        if router.poll() is not None:
            raise RuntimeError(f"router exited; see {logdir}/router-{name}.log")
        time.sleep(0.1)


def warm_up(c, queries: Queries) -> None:
    """Group join, model load, the hot query pool into the encoder cache."""
    futs = [c.route_async(queries.users[i % len(queries.users)], q) for i, q in enumerate(queries.hot)]
    for f in futs:
        f.result(timeout=120)


def measure_idle(pids: dict, idle_s: float) -> dict:
    """CPU cores of `pids` over idle_s seconds of no load."""
    m = CpuMeter(pids)
    time.sleep(idle_s)
    return m.cores()


def route_rate(c, s, name: str, overrides: dict, rate: float, duration: float, queries: Queries,
               pids: dict, idle: dict, startup_s: float) -> dict:
    """One open-loop route run at `rate` through client c; returns its row (with a "_window" to resolve)."""
    w = Waiter(int(rate * duration))
    kinds = {"fallback": 0, "error": 0, "repeat": 0}
    decs: list = [None] * len(w.done)

    def send(i, w=w, kinds=kinds, decs=decs):
        u, q, rep = queries.draw()
        kinds["repeat"] += rep
        f = c.route_async(u, q)
        f.add_done_callback(lambda f, i=i: (w.complete(i), decs.__setitem__(i, f.result())))
    m = CpuMeter(pids)
    tw0 = time.time()
    open_loop(rate, duration, send, w)
    cores = m.cores()
    wait_all(w, 20)
    tw1 = time.time()
    got = [d for d in decs if d is not None]
    row = {"config": name, "kafka_fetch_wait_ms": s.kafka_fetch_wait_ms, **overrides, "rate": rate,
           "duration_s": duration, **summarize(w),
           "fallback": sum(d.fallback for d in got), "error": sum(d.error is not None for d in got),
           "repeat_frac": round(kinds["repeat"] / max(len(w.done), 1), 3),
           "history_turns_p50": pct([len(d.turn_ids) for d in got], 50),
           "engine_decide_ms_p50": pct([d.latency_ms for d in got if d.latency_ms is not None], 50),
           "engine_decide_ms_p99": pct([d.latency_ms for d in got if d.latency_ms is not None], 99),
           "cores": cores, "idle_cores": idle, "startup_s": round(startup_s, 1), "_window": (tw0, tw1),
           "loadavg": list(os.getloadavg())}
    print(f"[{name}] route {rate:>5} req/s: p50 {row['p50_ms']} p99 {row['p99_ms']} ms, "
          f"{row['answered']}/{row['sent']}, cores {cores}", flush=True)
    return row


def attach_router_stats(rows: list[dict], stats: list[str]) -> None:
    """Replace each row's "_window" by the routers' per-batch timings in that window (in place)."""
    batches = []
    for path in stats:
        try:
            batches += json.loads(Path(path).read_text())["batches"]
        except Exception:
            pass
    for r in rows:
        r["router"] = router_window(batches, *r.pop("_window"))


def create_echo_topics(s) -> tuple[str, str]:
    req_t, rep_t = f"{s.topics.requests}.echo", f"{s.topics.decisions}.echo"
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    admin.create_topics([NewTopic(t, s.kafka_partitions, 1) for t in (req_t, rep_t)])
    admin.close()
    return req_t, rep_t


def echo_rate(ec: EchoClient, payload: bytes, name: str, r: dict, rate: float, duration: float,
              pids: dict, idle: dict) -> None:
    """One echo run at `rate`; its numbers go into the route row r (in place)."""
    m = CpuMeter(pids)
    w = ec.run(rate, duration, payload)
    e = summarize(w)
    r.update({"echo_p50_ms": e["p50_ms"], "echo_p99_ms": e["p99_ms"], "echo_answered": e["answered"],
              "echo_sent": e["sent"], "echo_cores": m.cores(), "echo_idle_cores": idle})
    print(f"[{name}] echo  {rate:>5} msg/s: p50 {e['p50_ms']} p99 {e['p99_ms']} ms, "
          f"{e['answered']}/{e['sent']}", flush=True)


def run_echo(stack, s, name: str, rows: list[dict], rates: list[float], duration: float, idle_s: float,
             logdir: Path) -> None:
    """The broker echo floor at the same rates; adds echo_* keys to rows (in place)."""
    req_t, rep_t = create_echo_topics(s)
    srv = start_child(["--serve", "echo", "--echo-topics", req_t, rep_t], s, logdir / f"echo-{name}.log")
    try:
        ec = EchoClient(s, req_t, rep_t)
        payload = (b'{"schema_version":1,"type":"RouteRequest","request_id":"req-' + b"0" * 32
                   + b'","user_id":"u00001","query":"' + b"x" * 120 + b'"}')
        wu = ec.run(50, 2, payload)  # warm-up: the echo group join
        if wu.count < len(wu.done):
            wait_all(wu, 10)
        pids = {"broker": stack.broker.pid, "echo": srv.pid, "client": os.getpid()}
        idle = measure_idle(pids, idle_s)
        for r, rate in zip(rows, rates):
            echo_rate(ec, payload, name, r, rate, duration, pids, idle)
        ec.close()
    finally:
        end_child(srv)


def run_config(stack, name: str, overrides: dict, shared: dict, rates: list[float], duration: float,
               queries: Queries, echo: bool, idle_s: float, logdir: Path) -> list[dict]:
    from streams.client import PrefstreamClient
    from streams.kafka_config import create_topics

    s = stack.settings(graph_name=shared["graph_name"], model_dir=shared["model_dir"], **overrides)
    create_topics(s)
    rows: list[dict] = []
    routers = [start_router(s, name, queries, logdir, (i, ROUTERS)) for i in range(ROUTERS)]
    t_start = routers[0][2]
    try:
        for router, stats, _ in routers:
            wait_router_ready(router, stats, name, logdir)
        with PrefstreamClient(s) as c:
            warm_up(c, queries)
            startup_s = time.monotonic() - t_start
            pids = {"broker": stack.broker.pid, "graph": stack.graph.pid, "client": os.getpid(),
                    **{("router" if ROUTERS == 1 else f"router{i}"): r.pid for i, (r, _, _) in enumerate(routers)}}
            idle = measure_idle(pids, idle_s)
            for rate in rates:
                rows.append(route_rate(c, s, name, overrides, rate, duration, queries, pids, idle, startup_s))
    finally:
        for router, _, _ in routers:
            end_child(router)
    attach_router_stats(rows, [stats for _, stats, _ in routers])
    if echo:
        run_echo(stack, s, name, rows, rates, duration, idle_s, logdir)
    return rows


def router_cores(cores: dict) -> float:
    """Cores of every router process together."""
    return round(sum(v for k, v in cores.items() if k.startswith("router")), 3)


def write_md(res: dict) -> None:
    L = ["# Route latency (request -> decision through the broker)", "",
         f"Command: `{res.get('command')}`  ", f"Machine: {res['machine']}", "",
         "Timings are noisy: 2 shared cores with other engineers' tests and training running (load average "
         "in each row's json). Latency is measured from each request's *due* time of an open-loop sender.", ""]
    for key in [k for k in ("runs", "runs_omp1", "runs_mixed") if res.get(k)]:
        st = res.get(f"setup_{key}") or res.get("setup") or {}
        L += [f"## Default settings ({key}: repeat-frac {st.get('repeat_frac')}, OMP_NUM_THREADS {st.get('omp_threads')}, {st.get('duration_s')} s per rate)", f"`{res['commands'].get(key)}`", "", "| rate /s | p50 ms | p99 ms | echo p50 ms | echo p99 ms | answered/sent "
              "| broker cores | router cores | router batch mean | decide p50 ms | load1 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res[key]:
            L.append(f"| {r['rate']:g} | {r['p50_ms']} | {r['p99_ms']} | {r.get('echo_p50_ms')} | {r.get('echo_p99_ms')} "
                     f"| {r['answered']}/{r['sent']} | {r['cores'].get('broker')} | {router_cores(r['cores'])} "
                     f"| {r.get('router', {}).get('batch_size_mean')} | {r.get('engine_decide_ms_p50')} | {r['loadavg'][0]:.2f} |")
        L += ["", "Router time per micro-batch (p50 / p99 ms, over the run's batches):", "",
              "| rate /s | handle | decide | subgraph read | encode | encode (batches w/ new text) | score | record | flush |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in res[key]:
            rt = r.get("router") or {}
            f = lambda k: f"{rt[k]['p50']} / {rt[k]['p99']}" if k in rt else "-"  # noqa: E731
            L.append(f"| {r['rate']:g} | {f('handle_ms')} | {f('decide_ms')} | {f('subgraph_ms')} | {f('encode_ms')} | "
                     f"{f('encode_ms_batches_with_new_text')} | {f('score_ms')} | {f('record_ms')} | {f('flush_ms')} |")
    if res.get("sweep"):
        L += ["", "## Settings sweep", "", "| config | fetch wait ms | batch size | batch wait ms | rate /s | p50 ms | p99 ms "
              "| answered/sent | echo p50 | echo p99 | broker cores (load) | broker cores (idle) | router cores | batch mean | load1 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["sweep"]:
            L.append(f"| {r['config']} | {r.get('kafka_fetch_wait_ms')} | {r.get('route_batch_size', 64)} "
                     f"| {r.get('route_batch_wait_ms', 2.0)} | {r['rate']:g} | {r['p50_ms']} | {r['p99_ms']} "
                     f"| {r['answered']}/{r['sent']} | {r.get('echo_p50_ms', '-')} | {r.get('echo_p99_ms', '-')} "
                     f"| {r['cores'].get('broker')} | {r['idle_cores'].get('broker')} | {router_cores(r['cores'])} "
                     f"| {r.get('router', {}).get('batch_size_mean')} | {r['loadavg'][0]:.2f} |")
    L += new_text_md(res)
    L += ["", res.get("notes", "")]
    (RESULTS / "route_latency.md").write_text("\n".join(L) + "\n")


def new_text_md(res: dict) -> list[str]:
    """Every-query-new runs (keys new_text*): latency against the broker echo of the same run (issue 16)."""
    L = []
    for key in sorted(k for k in res if k.startswith("new_text") and isinstance(res[k], list)):
        st = res.get(f"setup_{key}") or {}
        L += ["", f"## Every query new ({key}): {st.get('routers', 1)} router(s), encoder threads "
              f"{st.get('router_encoder_threads', 1)}, max sequence length {st.get('encoder_max_seq_length', 256)}, "
              f"{st.get('duration_s')} s per rate", f"`{res['commands'].get(key)}`", "",
              "| rate /s | p50 ms | p99 ms | echo p50 ms | p50 / echo p50 | answered/sent | router cores | batch mean "
              "| decide p50 | encode p50 | score p50 | load1 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res[key]:
            rt = r.get("router") or {}
            p50 = lambda k: rt[k]["p50"] if k in rt else "-"  # noqa: E731
            ratio = round(r["p50_ms"] / r["echo_p50_ms"], 2) if r.get("echo_p50_ms") else "-"
            L.append(f"| {r['rate']:g} | {r['p50_ms']} | {r['p99_ms']} | {r.get('echo_p50_ms')} | {ratio} "
                     f"| {r['answered']}/{r['sent']} | {router_cores(r['cores'])} | {rt.get('batch_size_mean')} "
                     f"| {p50('decide_ms')} | {p50('encode_ms')} | {p50('score_ms')} | {r['loadavg'][0]:.2f} |")
    return L


def plot(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if res.get("sweep") else 1, figsize=(12 if res.get("sweep") else 6, 4), squeeze=False)
    ax = axes[0][0]
    runs = res.get("runs") or []
    if runs:
        x = [r["rate"] for r in runs]
        ax.plot(x, [r["p50_ms"] for r in runs], "o-", label="route p50")
        ax.plot(x, [r["p99_ms"] for r in runs], "o--", label="route p99")
        ax.plot(x, [r.get("echo_p50_ms") for r in runs], "s-", label="echo p50")
        ax.plot(x, [r.get("echo_p99_ms") for r in runs], "s--", label="echo p99")
        ax.axhline(10, color="gray", lw=0.5)
        ax.axhline(30, color="gray", lw=0.5)
        ax.set_xlabel("requests/s")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title("round trip, default settings")
        ax.legend()
    if res.get("sweep"):
        ax = axes[0][1]
        sw = res["sweep"]
        labels = [r["config"] for r in sw]
        idx = np.arange(len(sw))
        ax.bar(idx - 0.2, [r["p50_ms"] for r in sw], 0.4, label="p50")
        ax.bar(idx + 0.2, [r["p99_ms"] for r in sw], 0.4, label="p99")
        ax.set_xticks(idx, labels, rotation=30, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"sweep at {sw[0]['rate']:g} req/s")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "route_latency.png", dpi=100)


SWEEP = {  # name -> settings overrides of the defaults (prefstream/config.py)
    "default": {},
    "fetch5": {"kafka_fetch_wait_ms": 5},
    "fetch10": {"kafka_fetch_wait_ms": 10},
    "fetch25": {"kafka_fetch_wait_ms": 25},
    "fetch50": {"kafka_fetch_wait_ms": 50},
    "batch1_wait0": {"route_batch_size": 1, "route_batch_wait_ms": 0.0},
    "batch64_wait0": {"route_batch_size": 64, "route_batch_wait_ms": 0.0},
    "batch64_wait10": {"route_batch_size": 64, "route_batch_wait_ms": 10.0},
}


def parser() -> argparse.ArgumentParser:
    """The command line: what to measure and how hard; the hidden flags start the benchmark's own processes."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=["router", "echo"], help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    ap.add_argument("--hot-file", help=argparse.SUPPRESS)
    ap.add_argument("--key", default="runs", help="results key of the main runs (e.g. runs_mixed)")
    ap.add_argument("--echo-topics", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=["main", "sweep", "all"], default="main")
    ap.add_argument("--rates", default="50,200,500")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per rate (main)")
    ap.add_argument("--sweep-configs", default=",".join(SWEEP), help=f"subset of {','.join(SWEEP)}")
    ap.add_argument("--sweep-rate", type=float, default=200)
    ap.add_argument("--sweep-duration", type=float, default=10.0)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--hot", type=int, default=200)
    ap.add_argument("--repeat-frac", type=float, default=0.5)
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement per config")
    ap.add_argument("--no-echo", action="store_true")
    ap.add_argument("--router-threads", type=int, help="PREFSTREAM_ROUTER_THREADS of the router (encoder and scorer "
                    "threads; default: the setting's default)")
    ap.add_argument("--routers", type=int, default=1, help="router processes (worker i of n reads partitions "
                    "p %% n == i, as Ray router workers do)")
    ap.add_argument("--member", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--encoder-threads", type=int, help="PREFSTREAM_ROUTER_ENCODER_THREADS of the router (texts its "
                    "ONNX encoder runs at once; default: the setting's default)")
    ap.add_argument("--omp-threads", help="OMP_NUM_THREADS for the router process (default: not set, torch uses all cores)")
    return ap


def main() -> None:
    a = parser().parse_args()
    global OMP_THREADS, ROUTERS
    OMP_THREADS, ROUTERS = a.omp_threads, a.routers
    if a.serve == "router":
        return serve_router(a.stats, a.hot_file, tuple(a.member) if a.member else (0, 1))
    if a.serve == "echo":
        return serve_echo(*a.echo_topics)

    clean_env()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` / kill: still stop what we started
    out = RESULTS / "route_latency.json"
    res = json.loads(out.read_text()) if out.exists() and a.only != "all" else {}
    res.setdefault("commands", {})
    res["machine"] = machine_facts()
    with private_stack("route") as stack:
        logdir = stack.dir / "logs"
        base = stack.settings()
        users, texts, pre = preload(stack, base, a.users, a.history)
        version = publish_fixed_model(base.model_dir)
        shared = {"graph_name": base.graph_name, "model_dir": base.model_dir}
        print(f"preloaded {pre}; model {version}; logs in {logdir}", flush=True)
        qs = Queries(texts, users, a.hot, a.repeat_frac)
        setup = {"omp_threads": a.omp_threads, "router_threads": a.router_threads or base.router_threads,
                 "router_encoder_threads": a.encoder_threads or base.router_encoder_threads, "routers": a.routers,
                 "encoder_max_seq_length": base.encoder_max_seq_length, "rates": a.rates, "duration_s": a.duration, "preload": pre, "model_version": version, "users": a.users, "history": a.history, "hot": a.hot,
                 "repeat_frac": a.repeat_frac, "partitions": base.kafka_partitions,
                 "queries": "real queries of ../shared/data/llmrouter; repeat-frac from a hot pool of --hot texts "
                            "(warmed once per router), the rest never sent before in the run (encoder misses)"}
        if a.only in ("main", "all"):
            rates = [float(x) for x in a.rates.split(",")]
            threads = {"router_threads": a.router_threads} if a.router_threads else {}
            if a.encoder_threads:
                threads["router_encoder_threads"] = a.encoder_threads
            res[a.key] = run_config(stack, "default", threads, shared, rates, a.duration, qs, not a.no_echo, a.idle,
                                    logdir)
            res["commands"][a.key] = command_line()
            res[f"setup_{a.key}"] = setup
            if a.key == "runs":
                res["command"], res["setup"] = command_line(), setup
        if a.only in ("sweep", "all"):
            sweep = []
            for name in a.sweep_configs.split(","):
                ov = SWEEP[name]
                echo = not a.no_echo and ("kafka_fetch_wait_ms" in ov or not ov)
                sweep += run_config(stack, name, ov, shared, [a.sweep_rate], a.sweep_duration, qs, echo, a.idle, logdir)
            res["sweep"] = sweep
            res["commands"]["sweep"] = command_line()
            res.setdefault("command", command_line())
            res.setdefault("setup", setup)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    write_json(out, res)
    write_md(res)
    plot(res)
    print(f"wrote {out}, .md, .png", flush=True)


if __name__ == "__main__":
    main()
