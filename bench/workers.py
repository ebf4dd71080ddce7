"""Router worker throughput (issue 7): decisions/s and latency vs Ray workers and micro-batch size.

One run, three layers, all on the same private stack (Tansu broker + FalkorDB on free ports, temp dir),
the same preloaded graph (simulated users with their first --history turns + the 9 LLMs, helpers of
bench/common.py and bench/route_latency.py) and the same fixed-seed GMTRouter:

1. scorer floor: Scorer.score_batch on in-memory subgraphs (read once), no Kafka, no graph, no encoder;
2. engine alone: RouteEngine.decide(list[RouteRequest]) with the real graph store, timed per part
   (subgraph read, encode, score) + the audit write (record_decisions) the loop does per batch;
3. through Kafka: PrefstreamClient.route_async -> route.requests -> Ray RouterWorker actors
   (workers.ray_workers.RouterWorker: build_engine + RouteLoop) -> route.decisions, closed loop with
   --inflight requests outstanding, for 1 and 2 workers and each batch size.

Query texts: a hot pool of --hot real queries of the data set, repeated; their embeddings are put into
each engine's encoder cache from the project's embedding cache (var/cache, same encoder) before timing, so
the encoder is a cache hit everywhere (new texts cost ~0.2-0.5 s each on this box, see route_latency.md).
Torch runs 1 thread in every engine (build_engine's router_threads default; OMP_NUM_THREADS=1 too).

The actors are a thin subclass of RouterWorker (BenchWorker, defined here) that adds: warm the encoder
cache, per-part timers, and its pid for CPU accounting. Everything on the request path is RouterWorker's own code.

    python bench/workers.py                              # workers 1,2 x batch 1,16,64, 15 s each
    python bench/workers.py --duration 5 --batches 16    # quick
Writes bench/results/workers.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

# bench/ must not shadow the project's packages (this file is bench/workers.py vs the workers/ package)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the Ray workers
from bench.common import (RESULTS, ROOT, CpuMeter, cached_embeddings, clean_env, command_line,  # noqa: E402
                          machine_facts, pct, private_stack, publish_fixed_model, write_json)
from bench.route_latency import Queries, preload  # noqa: E402
from workers.ray_workers import RouterWorker  # noqa: E402

os.chdir(ROOT)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ the actor
class BenchWorker(RouterWorker):
    """RouterWorker + bench hooks (cache warm-up, per-part timers, pid)."""

    PARTS = ("handle_ms", "decide_ms", "subgraph_ms", "encode_ms", "score_ms", "record_ms")

    def __init__(self, s, index: int):
        super().__init__(s, index)
        self._s = s
        self._stats_lock = threading.Lock()
        self._reset()
        e = self.engine
        self._wrap(e.store, "user_subgraphs", "subgraph_ms")
        self._wrap(e.store, "record_decisions", "record_ms")
        self._wrap(e.encoder, "encode", "encode_ms")
        self._wrap(e, "decide", "decide_ms")
        self._scorer = None
        self._wrap_loop()

    def _reset(self) -> None:
        self._st = {k: 0.0 for k in self.PARTS}
        self._st.update(batches=0, decisions=0, batch_sizes=[])

    def _add(self, key: str, ms: float) -> None:
        with self._stats_lock:
            self._st[key] += ms

    def _wrap(self, obj, name: str, key: str) -> None:
        fn = getattr(obj, name)

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._add(key, (time.perf_counter() - t) * 1000)
        setattr(obj, name, wrapper)

    def _wrap_loop(self) -> None:
        """Time each new scorer's score_batch (wrapped before the decide that uses it) and count batches
        through the loop's public on_batch hook."""
        decide = self.engine.decide

        def decide_with_scorer_timed(requests, early=None):
            sc = self.engine.models.scorer
            if sc is not None and sc is not self._scorer:
                self._wrap(sc, "score_batch", "score_ms")
                self._scorer = sc
            return decide(requests, early=early)

        def batch_done(n: int, handle_ms: float) -> None:
            self._add("handle_ms", handle_ms)
            with self._stats_lock:
                self._st["batches"] += 1
                self._st["decisions"] += n
                self._st["batch_sizes"].append(n)

        self.engine.decide = decide_with_scorer_timed
        self.loop.on_batch = batch_done

    def pid(self) -> int:
        return os.getpid()

    def warm(self, texts: list[str], embs) -> int:
        self.engine.encoder.prime(texts, embs)
        return self.engine.encoder.cached

    def stats(self, reset: bool = True) -> dict:
        with self._stats_lock:
            st = dict(self._st)
            if reset:
                self._reset()
        return st


# ------------------------------------------------------------------------------------------------ in-process layers
def timed_call(fn, *a) -> tuple[object, float]:
    t = time.perf_counter()
    r = fn(*a)
    return r, (time.perf_counter() - t) * 1000


def _start_engine(s, hot: list[str], hot_emb: np.ndarray):
    """A RouteEngine on the private stack, encoder cache warm, audit writes on, once its scorer is loaded:
    (engine, torch threads, scorer, candidate LLMs sorted by id)."""
    from workers.build import build_engine

    engine = build_engine(s)
    engine.encoder.prime(hot, hot_emb)
    engine.record = True
    import torch

    threads = torch.get_num_threads()
    scorer = _wait_for_scorer(engine, 60)
    catalog = engine.catalog()
    cands = sorted(catalog.values(), key=lambda m: m.llm_id)
    return engine, threads, scorer, cands


def _wait_for_scorer(engine, timeout: float):
    """Refresh the engine's models until a scorer is loaded or `timeout` seconds pass; the scorer (or None)."""
    deadline = time.time() + timeout
    while engine.models.scorer is None and time.time() < deadline:
        engine.models.refresh()
        time.sleep(0.2)
    return engine.models.scorer


def _scorer_floor_row(scorer, items: list, b: int, seconds: float) -> dict:
    """Bare Scorer.score_batch on in-memory items for `seconds` (at least 5 calls), after one warm-up call."""
    scorer.score_batch(items)  # warm-up
    ts = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 5:
        ts.append(timed_call(scorer.score_batch, items)[1])
    return {"calls": len(ts), "batch_ms_p50": pct(ts, 50), "batch_ms_p99": pct(ts, 99),
            "ms_per_decision": round(float(np.median(ts)) / b, 3),
            "decisions_per_s": round(b * len(ts) / (sum(ts) / 1000), 1), "loadavg": list(os.getloadavg())}


def _engine_parts(engine, scorer, users: list[str], hot: list[str], b: int, seconds: float,
                  rng: np.random.Generator) -> tuple[dict, int]:
    """Engine alone: real graph reads, cached encoder, real scorer; + the audit write the loop does.
    The store's, encoder's and scorer's methods are timed while it runs and restored after:
    (ms lists per part, batches run)."""
    parts = {k: [] for k in ("decide_ms", "subgraph_ms", "encode_ms", "score_ms", "record_ms", "serde_ms")}
    orig = {"sg": engine.store.user_subgraphs, "enc": engine.encoder.encode, "sc": scorer.score_batch}
    cur: dict = {}

    def wrap(fn, key):
        def w(*a, **kw):
            r, ms = timed_call(lambda: fn(*a, **kw))
            cur[key] = cur.get(key, 0.0) + ms
            return r
        return w
    engine.store.user_subgraphs = wrap(orig["sg"], "subgraph_ms")
    engine.encoder.encode = wrap(orig["enc"], "encode_ms")
    scorer.score_batch = wrap(orig["sc"], "score_ms")
    try:
        n = _engine_batches(engine, users, hot, b, seconds, rng, parts, cur)
    finally:
        engine.store.user_subgraphs, engine.encoder.encode, scorer.score_batch = orig["sg"], orig["enc"], orig["sc"]
    return parts, n


def _engine_batches(engine, users: list[str], hot: list[str], b: int, seconds: float, rng: np.random.Generator,
                    parts: dict, cur: dict) -> int:
    """Random batches of `b` requests through engine.decide + record_decisions for `seconds` (at least 5);
    appends each batch's times to `parts` (the wrapped parts from `cur`); returns the number of batches."""
    from prefstream.events import RouteRequest

    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end or n < 5:
        reqs = [RouteRequest(request_id=f"req-{n:08d}{i:06d}", user_id=users[int(rng.integers(len(users)))],
                             query=hot[int(rng.integers(len(hot)))]) for i in range(b)]
        cur.clear()
        dms, rms, serde = _engine_batch(engine, reqs)
        parts["decide_ms"].append(dms)
        parts["record_ms"].append(rms)
        parts["serde_ms"].append(serde)
        for k in ("subgraph_ms", "encode_ms", "score_ms"):
            parts[k].append(cur.get(k, 0.0))
        n += 1
    return n


def _engine_batch(engine, reqs: list) -> tuple[float, float, float]:
    """One batch as the loop handles it: (decide ms, record_decisions ms, parse + serialize ms)."""
    from prefstream.events import RouteRequest

    # the loop's per-request work besides decide: parse the request, serialize the decision
    t = time.perf_counter()
    from prefstream.events import parse_event
    raws = [r.to_bytes() for r in reqs]
    reqs = [parse_event(x, RouteRequest) for x in raws]
    serde = (time.perf_counter() - t) * 1000
    decs, dms = timed_call(engine.decide, reqs)
    t = time.perf_counter()
    [d.to_bytes() for d in decs]
    serde += (time.perf_counter() - t) * 1000
    _, rms = timed_call(engine.record_decisions, decs)
    return dms, rms, serde


def _engine_row(parts: dict, n: int, b: int) -> dict:
    """Per-part p50/p99/mean-per-decision and decisions/s of the engine-alone batches."""
    row = {"calls": n, "loadavg": list(os.getloadavg())}
    for k, xs in parts.items():
        row[k] = {"p50": pct(xs, 50), "p99": pct(xs, 99), "per_decision_mean": round(float(np.mean(xs)) / b, 3)}
    tot = sum(parts["decide_ms"]) + sum(parts["record_ms"]) + sum(parts["serde_ms"])
    row["decisions_per_s_decide_only"] = round(b * n / (sum(parts["decide_ms"]) / 1000), 1)
    row["decisions_per_s_with_record_serde"] = round(b * n / (tot / 1000), 1)
    return row


def _floor_and_engine_rows(engine, scorer, subs: list, cands: list, users: list[str], hot: list[str],
                           hot_emb: np.ndarray, b: int, seconds: float, rng: np.random.Generator) -> tuple[dict, dict]:
    """(scorer floor row, engine-alone row) for batch size b, each logged."""
    items = [(subs[i % len(subs)], hot_emb[i % len(hot_emb)], cands) for i in range(b)]
    floor_row = _scorer_floor_row(scorer, items, b, seconds)
    log(f"scorer floor batch {b}: {floor_row['ms_per_decision']} ms/decision, {floor_row['decisions_per_s']}/s")

    parts, n = _engine_parts(engine, scorer, users, hot, b, seconds, rng)
    row = _engine_row(parts, n, b)
    log(f"engine batch {b}: decide p50 {row['decide_ms']['p50']} ms (subgraph {row['subgraph_ms']['p50']}, "
        f"encode {row['encode_ms']['p50']}, score {row['score_ms']['p50']}), record {row['record_ms']['p50']}; "
        f"{row['decisions_per_s_decide_only']}/s decide-only, {row['decisions_per_s_with_record_serde']}/s with record")
    return floor_row, row


def scorer_and_engine(s, users: list[str], hot: list[str], hot_emb: np.ndarray, batches: list[int],
                      seconds: float) -> tuple[dict, dict]:
    """(scorer floor per batch, engine-alone per batch) in this process, torch 1 thread."""
    engine, threads, scorer, cands = _start_engine(s, hot, hot_emb)
    rng = np.random.default_rng(0)
    nmax = max(batches)
    subs = engine.store.user_subgraphs(users[:nmax], engine.k)  # in memory from here on
    floor: dict = {}
    engine_rows: dict = {}
    for b in batches:
        floor[b], engine_rows[b] = _floor_and_engine_rows(engine, scorer, subs, cands, users, hot, hot_emb, b,
                                                          seconds, rng)
    engine.models.stop()
    engine.store.close()
    return {"torch_threads": threads, "rows": floor}, engine_rows


# ------------------------------------------------------------------------------------------------ Kafka + Ray
def closed_loop(client, queries: Queries, inflight: int, warmup: float, duration: float, drain: float) -> dict:
    """Keep `inflight` requests outstanding; throughput and latency over the window after warm-up."""
    sem = threading.Semaphore(inflight)
    done: list[tuple[float, float]] = []
    errors = {"error": 0, "fallback": 0}
    lock = threading.Lock()
    stop = threading.Event()
    sent = [0]

    def on_done(f, t0):
        t1 = time.perf_counter()
        sem.release()
        try:
            d = f.result()
            with lock:
                done.append((t1, (t1 - t0) * 1000))
                errors["error"] += d.error is not None
                errors["fallback"] += bool(d.fallback)
        except Exception:
            pass

    def sender():
        while not stop.is_set():
            if not sem.acquire(timeout=0.2):
                continue
            u, q, _ = queries.draw()
            t0 = time.perf_counter()
            f = client.route_async(u, q)
            sent[0] += 1
            f.add_done_callback(lambda f, t0=t0: on_done(f, t0))

    th = threading.Thread(target=sender, daemon=True)
    t_start = time.perf_counter()
    th.start()
    time.sleep(warmup)
    w0 = time.perf_counter()
    time.sleep(duration)
    w1 = time.perf_counter()
    stop.set()
    th.join(5)
    end = time.monotonic() + drain
    while time.monotonic() < end:
        with lock:
            if len(done) >= sent[0]:
                break
        time.sleep(0.1)
    with lock:
        win = [lat for t, lat in done if w0 <= t <= w1]
        total = len(done)
    return {"decisions_per_s": round(len(win) / (w1 - w0), 1), "p50_ms": pct(win, 50), "p99_ms": pct(win, 99),
            "window_decisions": len(win), "sent": sent[0], "answered": total, "unanswered_after_drain": sent[0] - total,
            "errors": errors["error"], "fallbacks": errors["fallback"], "window_s": round(w1 - w0, 2),
            "warmup_s": warmup, "started_s_ago": round(time.perf_counter() - t_start, 1)}


def actor_breakdown(stats: list[dict]) -> dict:
    n = sum(st["decisions"] for st in stats)
    bs = [x for st in stats for x in st["batch_sizes"]]
    out = {"batches": len(bs), "decisions": n, "batch_size_mean": round(float(np.mean(bs)), 2) if bs else None}
    for k in BenchWorker.PARTS:
        tot = sum(st[k] for st in stats)
        out[k.replace("_ms", "_ms_per_decision")] = round(tot / n, 3) if n else None
    return out


def kafka_runs(stack, s, queries: Queries, hot_emb: np.ndarray, workers: list[int], batches: list[int],
               inflight: int, warmup: float, duration: float, drain: float) -> list[dict]:
    from prefstream.ray_env import init_ray
    from streams.client import PrefstreamClient
    from streams.kafka_config import create_topics
    from workers.ray_workers import stop_workers

    ray = init_ray("local", num_cpus=2)
    rows: list[dict] = []
    actors: list = []
    remote = ray.remote(BenchWorker).options(num_cpus=s.router_num_cpus, max_restarts=0)

    def stop_actors() -> None:
        stop_workers(actors)

    try:
        for n in workers:
            for b in batches:
                # a fresh set of actors, topics and consumer group per configuration: nothing left over from the previous
                # one (re-using one group across configurations stalled a run: members never got partitions)
                sc = stack.settings(tag=f"w{n}b{b}{os.getpid()}", graph_name=s.graph_name, model_dir=s.model_dir,
                                    router_threads=1, route_batch_size=b,
                                    router_group=f"bench-router-w{n}b{b}-{os.getpid()}")
                create_topics(sc)
                t = time.monotonic()
                actors.extend(remote.remote(sc, i, n) for i in range(n))
                ray.get([a.warm.remote(queries.hot, hot_emb) for a in actors], timeout=300)
                startup = round(time.monotonic() - t, 1)
                pids = {f"worker{i}": ray.get(a.pid.remote()) for i, a in enumerate(actors)}
                pids.update(broker=stack.broker.pid, graph=stack.graph.pid, client_and_driver=os.getpid())
                with PrefstreamClient(sc) as client:
                    ray.get([a.stats.remote() for a in actors])
                    m = CpuMeter(pids)
                    r = closed_loop(client, queries, inflight, warmup, duration, drain)
                    cores = m.cores()
                    st = ray.get([a.stats.remote() for a in actors])
                row = {"workers": n, "batch": b, **r, "inflight": inflight, "cores": cores, "startup_s": startup,
                       "router_per_decision_ms": actor_breakdown(st), "loadavg": list(os.getloadavg())}
                rows.append(row)
                log(f"kafka workers {n} batch {b}: {r['decisions_per_s']}/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms "
                    f"(batch mean {row['router_per_decision_ms']['batch_size_mean']}, startup {startup} s), cores {cores}")
                stop_actors()
    finally:
        stop_actors()
        ray.shutdown()
    return rows


# ------------------------------------------------------------------------------------------------ report
def plot(runs: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for n in sorted({r["workers"] for r in runs}):
        rs = sorted((r for r in runs if r["workers"] == n), key=lambda r: r["batch"])
        ax.plot([r["batch"] for r in rs], [r["decisions_per_s"] for r in rs], "o-", label=f"{n} worker(s), Kafka + Ray")
    fl = sorted({(r["batch"], r["scorer_floor_ms"]) for r in runs if r.get("scorer_floor_ms")})
    if fl:
        ax.plot([b for b, _ in fl], [1000 / ms for _, ms in fl], "k--", label="bare scorer, 1 thread (floor)")
    en = sorted({(r["batch"], r.get("engine_decisions_per_s")) for r in runs if r.get("engine_decisions_per_s")})
    if en:
        ax.plot([b for b, _ in en], [v for _, v in en], "g:", marker="s", label="engine.decide alone")
    ax.axhline(1500, color="r", lw=0.8, label="target 1,500/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("route_batch_size")
    ax.set_ylabel("decisions / s")
    ax.set_title("Router throughput, 2 shared CPU cores (noisy)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_md(out: dict, path: Path) -> None:
    L = ["# Router workers: decisions/s vs workers and batch size (issue 7)", "",
         f"Command: `{out['command']}`  ", f"Device: {out['device']}  ", f"Machine: {out['machine']}", "",
         "Timings are noisy: 2 CPU cores shared with other engineers' jobs (load average per row). "
         "Query texts: a hot pool of real queries, pre-warmed into every encoder cache (encoder = cache hit). "
         "Torch 1 thread everywhere.", "",
         "## Through Kafka to Ray RouterWorker actors (closed loop)", "",
         f"{out['setup']['inflight']} requests outstanding; {out['setup']['duration_s']} s window after "
         f"{out['setup']['warmup_s']} s warm-up. Latency = route_async -> decision received (Little's law: with a "
         "fixed number in flight, p50 ~ in-flight / throughput).", "",
         "| workers | batch | decisions/s | p50 ms | p99 ms | scorer floor ms/decision | engine alone decisions/s "
         "| batch mean seen | router ms/decision: handle = decide (subgraph + encode + score) | record (audit) "
         "| worker wall outside handle ms/decision | CPU ms/decision: workers / all our processes "
         "| cores: workers / broker / graph / client | load1 |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["runs"]:
        br = r.get("router_per_decision_ms", {})
        br.pop("flush_commit_ms_per_decision", None)  # never timed (first runs had it as a 0.0 placeholder)
        c = r.get("cores", {})
        thr = r.get("decisions_per_s") or 0
        wcpu = sum(v for k, v in c.items() if k.startswith("worker"))
        r["derived"] = {
            "worker_cpu_ms_per_decision": round(wcpu * 1000 / thr, 3) if thr else None,
            "all_cpu_ms_per_decision": round(sum(c.values()) * 1000 / thr, 3) if thr else None,
            # wall time per decision in one worker minus its RouteLoop._handle time: poll/fetch wait, batch
            # wait, producer flush, offset commit, and waiting for a CPU
            "worker_wall_outside_handle_ms_per_decision": round(r["workers"] * 1000 / thr - br["handle_ms_per_decision"], 3)
            if thr and br.get("handle_ms_per_decision") is not None else None}
        wc = "+".join(str(v) for k, v in c.items() if k.startswith("worker"))
        L.append(f"| {r['workers']} | {r['batch']} | {r['decisions_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                 f"{r['scorer_floor_ms']} | {r.get('engine_decisions_per_s')} | {br.get('batch_size_mean')} | "
                 f"{br.get('handle_ms_per_decision')} = {br.get('decide_ms_per_decision')} ({br.get('subgraph_ms_per_decision')} + "
                 f"{br.get('encode_ms_per_decision')} + {br.get('score_ms_per_decision')}) | {br.get('record_ms_per_decision')} | "
                 f"{r['derived']['worker_wall_outside_handle_ms_per_decision']} | "
                 f"{r['derived']['worker_cpu_ms_per_decision']} / {r['derived']['all_cpu_ms_per_decision']} | "
                 f"{wc} / {c.get('broker')} / {c.get('graph')} / {c.get('client_and_driver')} | {r['loadavg'][0]:.1f} |")
    L += ["", "## Engine alone (RouteEngine.decide, real graph, no Kafka) and bare scorer, ms per decision (mean)", "",
          "| batch | scorer floor ms/decision (p50 call / batch) | decide | subgraph read | encode (cached) | score | "
          "record_decisions (audit) | parse+serialize | decisions/s decide only | decisions/s + record + serde | load1 |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b, e in out["engine"].items():
        f = out["scorer_floor"]["rows"][b]
        L.append(f"| {b} | {f['ms_per_decision']} | {e['decide_ms']['per_decision_mean']} | "
                 f"{e['subgraph_ms']['per_decision_mean']} | {e['encode_ms']['per_decision_mean']} | "
                 f"{e['score_ms']['per_decision_mean']} | {e['record_ms']['per_decision_mean']} | "
                 f"{e['serde_ms']['per_decision_mean']} | {e['decisions_per_s_decide_only']} | "
                 f"{e['decisions_per_s_with_record_serde']} | {e['loadavg'][0]:.1f} |")
    if out.get("plot"):
        L += ["", f"![decisions/s vs batch]({out['plot']})"]
    if out.get("notes"):
        L += ["", out["notes"]]
    path.write_text("\n".join(L) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--router-cpus", type=float, default=None,
                    help="Ray CPUs per worker actor (default: the router_num_cpus setting); below 1 to run more "
                         "workers than the 2 cores")
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds per Kafka config")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--drain", type=float, default=30.0)
    ap.add_argument("--engine-seconds", type=float, default=5.0, help="seconds per batch size, floor and engine each")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--hot", type=int, default=200)
    ap.add_argument("--no-kafka", action="store_true")
    ap.add_argument("--out", default="workers")
    ap.add_argument("--render-only", action="store_true",
                    help="re-write the md/png (and notes) from an existing json, no measurement")
    args = ap.parse_args()
    if args.render_only:
        out = json.loads((RESULTS / f"{args.out}.json").read_text())
        notes = RESULTS / f"{args.out}.notes.md"
        if notes.exists():
            out["notes"] = notes.read_text()
        if plot(out["runs"], RESULTS / f"{args.out}.png"):
            out["plot"] = f"{args.out}.png"
        write_md(out, RESULTS / f"{args.out}.md")  # adds the derived columns to out["runs"]
        write_json(RESULTS / f"{args.out}.json", out)
        return 0
    clean_env()
    workers = [int(x) for x in args.workers.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    import torch

    torch.set_num_threads(1)
    out: dict = {"command": command_line(), "device": "cpu (2 cores, shared)", "machine": machine_facts()}
    with private_stack("workers") as stack:
        s = stack.settings(router_threads=1, **({} if args.router_cpus is None else
                                                {"router_num_cpus": args.router_cpus}))
        version = publish_fixed_model(s.model_dir)
        users, texts, facts = preload(stack, s, args.users, args.history)
        log(f"preloaded {facts}")
        queries = Queries(texts, users, hot=args.hot, repeat_frac=1.0)
        hot_emb = cached_embeddings(queries.hot)
        floor, engine = scorer_and_engine(s, users, queries.hot, hot_emb, batches, args.engine_seconds)
        kafka = [] if args.no_kafka else kafka_runs(stack, s, queries, hot_emb, workers, batches, args.inflight,
                                                   args.warmup, args.duration, args.drain)
    runs = []
    for r in kafka or [{"workers": 0, "batch": b, "decisions_per_s": None, "p50_ms": None, "p99_ms": None,
                        "loadavg": list(os.getloadavg())} for b in batches]:
        b = r["batch"]
        runs.append({**r, "scorer_floor_ms": floor["rows"][b]["ms_per_decision"],
                     "engine_decisions_per_s": engine[b]["decisions_per_s_with_record_serde"]})
    out.update(runs=runs, scorer_floor=floor, engine=engine, model_version=version,
               setup={"preload": facts, "users": args.users, "history": args.history, "hot": args.hot,
                      "queries": "hot pool of real queries, repeated, pre-warmed in every encoder cache",
                      "inflight": args.inflight, "duration_s": args.duration, "warmup_s": args.warmup,
                      "partitions": s.kafka_partitions, "route_batch_wait_ms": s.route_batch_wait_ms,
                      "kafka_fetch_wait_ms": s.kafka_fetch_wait_ms, "router_num_cpus": s.router_num_cpus,
                      "torch_threads": 1, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")})
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    png = RESULTS / f"{args.out}.png"
    if plot(runs, png):
        out["plot"] = png.name
    notes = RESULTS / f"{args.out}.notes.md"
    if notes.exists():
        out["notes"] = notes.read_text()
    write_md(out, RESULTS / f"{args.out}.md")
    write_json(RESULTS / f"{args.out}.json", out)
    log(f"wrote {RESULTS / args.out}.json/.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
