"""Ingest throughput: turns/s with embedding, from publish to graph, through the real Faust worker.

Starts its own Tansu broker and FalkorDB server on free ports (temp dir). Events come from the simulator
(trainer/simulate.py over ../shared/data/llmrouter): the first --turns ChatTurns in time order plus the
Feedback events on them. Two workloads:
  sim     the simulator's turns as they are: each distinct query text is embedded once (the K answers to one
          user-turn share the query, so the encoder cache hits on the others);
  hot     the same turns with each query replaced by one of --hot-size real texts, so after the first batches
          every embedding is an encoder-cache hit: the pipeline without the encoder.
  routed  the sim turns, each query already routed: its Query node (text + vector) is in the graph before the
          clock starts, as a router writes it with its audit record, so the ingest reads the vector instead of
          running the encoder (the usual order in production: route, answer, publish the turn). The vectors
          come from the project's embedding cache (var/cache), computed once, untimed. Not in the headline
          turns_per_s, which counts only workloads where the ingest runs the encoder.
Modes:
  faust     `python -m stack.cli ingest` as a subprocess (settings as PREFSTREAM_* env); the 9 LLMs are
            published first and the clock starts when the worker has ingested them (group joined, encoder
            loaded); then all turns + feedback are published and the clock stops when store.count('Turn') and
            store.count('Feedback') reach the expected numbers.
  ingestor  streams.ingest.Ingestor alone (no Kafka) on the same store and encoder code, batch by batch,
            with the time split into encode / graph upsert / the rest.

    python bench/ingest.py                                         # default plan
    python bench/ingest.py --modes ingestor --batch-sizes 64,256,1024 --turns 2000
Writes bench/results/ingest.{json,md}; a run merges its rows into an existing json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (RESULTS, ROOT, CpuMeter, child_env, clean_env, command_line, llm_events,  # noqa: E402
                          machine_facts, private_stack, write_json)
from prefstream.config import Settings  # noqa: E402

os.chdir(ROOT)


def workload(n_turns: int, kind: str, hot: int = 50, users: int = 400):
    from prefstream.events import ChatTurn, Feedback
    from trainer.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(n_users=users, n_new_users=0, seed=0))
    evs = sim.events()
    turns = [e for e in evs if isinstance(e, ChatTurn)][:n_turns]
    ids = {t.event_id for t in turns}
    fbs = [e for e in evs if isinstance(e, Feedback) and e.turn_id in ids
           and getattr(e.signal, "rejected_turn_id", None) in (None, *ids)]
    if kind == "hot":
        rng = np.random.default_rng(3)
        pool = [sim.data.queries[i] for i in rng.permutation(len(sim.data.queries))[:hot]]
        turns = [t.model_copy(update={"query": pool[int(rng.integers(hot))]}) for t in turns]
    return turns, fbs


def text_facts(turns) -> dict:
    qs = [t.query for t in turns]
    return {"turns": len(turns), "distinct_queries": len(set(qs)),
            "query_chars_p50": float(np.median([len(q) for q in qs])),
            "query_chars_p90": float(np.percentile([len(q) for q in qs], 90))}


def store_routed(store, s, turns) -> None:
    """What routers leave behind for these turns: a Query node with its vector per distinct text."""
    from trainer.embed import embed_texts

    texts = list(dict.fromkeys(t.query for t in turns))
    store.upsert_queries(list(zip(texts, embed_texts(texts, s.encoder, progress=True))))


# ------------------------------------------------------------------------------------------------ ingestor alone
OMP_THREADS: str | None = None  # --omp-threads
ENCODER_BACKEND = Settings().encoder_backend  # --encoder-backend


def run_ingestor(stack, turns, fbs, batch: int, kind: str, max_seq: int | None) -> dict:
    from graphstore import open_store
    from prefstream.encoder import TextEncoder
    from streams.ingest import Ingestor, RawMessage

    s = stack.settings(ingest_batch_size=batch, encoder_backend=ENCODER_BACKEND)
    store = open_store(s)
    store.ensure_schema()
    if kind == "routed":
        store_routed(store, s, turns)
    enc = TextEncoder.from_settings(s, int(OMP_THREADS) if OMP_THREADS else (os.cpu_count() or 1))
    import torch

    torch.set_num_threads(int(OMP_THREADS) if OMP_THREADS else (os.cpu_count() or 1))
    if max_seq:
        enc.max_seq_length = max_seq
    t_ = {"encode_s": 0.0, "upsert_turns_s": 0.0, "upsert_feedback_s": 0.0, "encoded_texts": 0}

    def wrap(obj, name, key):
        fn = getattr(obj, name)

        def w(*a, **kw):
            t = time.perf_counter()
            n0 = enc.encoded
            try:
                return fn(*a, **kw)
            finally:
                t_[key] += time.perf_counter() - t
                if key == "encode_s":
                    t_["encoded_texts"] += enc.encoded - n0
        setattr(obj, name, w)

    wrap(enc, "encode", "encode_s")
    wrap(store, "upsert_turns", "upsert_turns_s")
    wrap(store, "upsert_feedback", "upsert_feedback_s")
    ing = Ingestor(store, enc, s.max_text_chars, s.unknown_llm_grace_s)
    ing.llms([RawMessage(e.to_bytes(), s.topics.catalog) for e in llm_events()])
    for k in list(t_):
        t_[k] = 0 if k == "encoded_texts" else 0.0
    tm = [RawMessage(e.to_bytes(), s.topics.turns) for e in turns]
    fm = [RawMessage(e.to_bytes(), s.topics.feedback) for e in fbs]
    t0 = time.perf_counter()
    acc = 0
    for i in range(0, len(tm), batch):
        acc += ing.turns(tm[i:i + batch]).accepted
    t_turns = time.perf_counter() - t0
    for i in range(0, len(fm), batch):
        ing.feedback(fm[i:i + batch])
    total = time.perf_counter() - t0
    n_turn, n_fb = store.count("Turn"), store.count("Feedback")
    store.clear()
    store.close()
    return {"mode": "ingestor", "workload": kind, "ingest_batch_size": batch, "max_seq_length": max_seq or 256,
            "omp_threads": OMP_THREADS, "turns": len(turns), "feedback": len(fbs), "accepted": acc, "graph_turns": n_turn, "graph_feedback": n_fb,
            "turns_per_s": round(len(turns) / t_turns, 1), "turns_phase_s": round(t_turns, 2),
            "events_per_s": round((len(turns) + len(fbs)) / total, 1), "total_s": round(total, 2),
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in t_.items()},
            "other_s": round(t_turns - t_["encode_s"] - t_["upsert_turns_s"], 2), "loadavg": list(os.getloadavg())}


# ------------------------------------------------------------------------------------------------ faust worker
def run_faust(stack, turns, fbs, batch: int, kind: str, logdir: Path, timeout: float) -> dict:
    from kafka import KafkaProducer

    from graphstore import open_store
    from streams.kafka_config import create_topics, producer_kwargs

    s = stack.settings(ingest_batch_size=batch, encoder_backend=ENCODER_BACKEND)
    create_topics(s)
    store = open_store(s)
    store.ensure_schema()
    if kind == "routed":
        store_routed(store, s, turns)
    log = logdir / f"ingest-{kind}-{batch}-{uuid.uuid4().hex[:4]}.log"
    t_start = time.monotonic()
    env = child_env(s)
    if OMP_THREADS:
        env["OMP_NUM_THREADS"] = OMP_THREADS
    proc = subprocess.Popen([sys.executable, "-m", "stack.cli", "ingest", "--loglevel", "warning"],
                            env=env, cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    row: dict = {"mode": "faust", "workload": kind, "ingest_batch_size": batch, "omp_threads": OMP_THREADS, "turns": len(turns),
                 "feedback": len(fbs), "log": str(log)}
    try:
        prod = KafkaProducer(**producer_kwargs(s))
        for e in llm_events():
            prod.send(s.topics.catalog, key=e.llm_id.encode(), value=e.to_bytes())
        prod.flush()
        while len(store.llm_catalog()) < 9:
            if proc.poll() is not None:
                raise RuntimeError(f"ingest worker exited; see {log}")
            if time.monotonic() - t_start > 180:
                raise TimeoutError("worker not ready in 180 s")
            time.sleep(0.1)
        row["startup_s"] = round(time.monotonic() - t_start, 1)
        m = CpuMeter({"broker": stack.broker.pid, "graph": stack.graph.pid, "worker": proc.pid, "bench": os.getpid()})
        t0 = time.perf_counter()
        for e in turns:
            prod.send(s.topics.turns, key=e.user_id.encode(), value=e.to_bytes())
        for e in fbs:
            prod.send(s.topics.feedback, key=e.user_id.encode(), value=e.to_bytes())
        prod.flush()
        row["publish_s"] = round(time.perf_counter() - t0, 2)
        curve = []
        t_turns = t_all = None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            nt, nf = store.count("Turn"), store.count("Feedback")
            el = time.perf_counter() - t0
            curve.append((round(el, 2), nt, nf))
            if t_turns is None and nt >= len(turns):
                t_turns = el
            if nt >= len(turns) and nf >= len(fbs):
                t_all = el
                break
            if proc.poll() is not None:
                break
            time.sleep(0.25)
        row.update({"cores": m.cores(), "graph_turns": curve[-1][1], "graph_feedback": curve[-1][2],
                    "turns_s": round(t_turns, 2) if t_turns else None, "all_s": round(t_all, 2) if t_all else None,
                    "turns_per_s": round(len(turns) / t_turns, 1) if t_turns else
                    round(curve[-1][1] / curve[-1][0], 1),
                    "events_per_s": round((len(turns) + len(fbs)) / t_all, 1) if t_all else None,
                    "complete": t_all is not None, "curve": curve[:: max(1, len(curve) // 60)],
                    "loadavg": list(os.getloadavg())})
        prod.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        try:
            store.clear()
        finally:
            store.close()
    return row


def write_md(res: dict) -> None:
    L = ["# Ingest throughput (turns/s with embedding, publish -> graph)", "",
         "Timings are noisy: 2 shared cores with other engineers' tests and training running (load average per row "
         "in the json).", "", "Commands:", *[f"- `{c}`" for c in res.get("commands", [])], "",
         f"Machine: {res['machine']}", "", "Workloads: " + json.dumps(res.get("workloads", {})), "",
         "| mode | workload | encoder | batch | max_seq | threads | turns | turns/s | events/s | complete | encode s | upsert turns s | "
         "other s | encoded texts | worker cores | broker cores | load1 |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res.get("rows", []):
        c = r.get("cores", {})
        L.append(f"| {r['mode']} | {r['workload']} | {r.get('encoder_backend', 'torch')} | {r['ingest_batch_size']} | {r.get('max_seq_length', 256)} "
                 f"| {r.get('omp_threads') or 'all'} | {r['turns']} | {r['turns_per_s']} | {r.get('events_per_s')} | {r.get('complete', True)} "
                 f"| {r.get('encode_s', '-')} | {r.get('upsert_turns_s', '-')} | {r.get('other_s', '-')} "
                 f"| {r.get('encoded_texts', '-')} | {c.get('worker', '-')} | {c.get('broker', '-')} | {r['loadavg'][0]:.2f} |")
    L += ["", f"Best turns/s: {res.get('turns_per_s')} (target >= 1,000). With every query routed first (the vector "
          f"read from the graph, no encoder run): {res.get('routed_turns_per_s')}. Cold (each user-turn's query new, "
          f"the default {Settings().encoder_backend} encoder, batch 256): {res.get('cold_turns_per_s')} turns/s.", "",
          "Rows before 2026-12-01 21:37 UTC ran the torch encoder (the only one then); the notes below are theirs.", "",
          res.get("notes", "")]
    (RESULTS / "ingest.md").write_text("\n".join(L) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="ingestor,faust")
    ap.add_argument("--workloads", default="hot,sim")
    ap.add_argument("--hot-size", type=int, default=50)
    ap.add_argument("--turns", type=int, default=2000)
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--max-seq", default="", help="ingestor mode only: also try these encoder max_seq_length, e.g. 64,128")
    ap.add_argument("--timeout", type=float, default=300, help="faust: seconds to wait for the graph")
    ap.add_argument("--fresh", action="store_true", help="do not merge into an existing results json")
    ap.add_argument("--encoder-backend", choices=["static", "onnx", "torch"], default=Settings().encoder_backend,
                    help="the worker's encoder (default: the setting's default)")
    ap.add_argument("--omp-threads", help="OMP_NUM_THREADS for the worker / torch threads in-process (default: all cores)")
    a = ap.parse_args()
    global OMP_THREADS, ENCODER_BACKEND
    OMP_THREADS, ENCODER_BACKEND = a.omp_threads, a.encoder_backend
    clean_env()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` / kill: still stop what we started
    out = RESULTS / "ingest.json"
    res = json.loads(out.read_text()) if out.exists() and not a.fresh else {}
    res["machine"] = machine_facts()
    res.setdefault("commands", []).append(command_line())
    res.setdefault("rows", [])
    res.setdefault("workloads", {})
    with private_stack("ingest") as stack:
        logdir = stack.dir / "logs"
        for kind in a.workloads.split(","):
            turns, fbs = workload(a.turns, kind, a.hot_size)
            res["workloads"][kind] = {**text_facts(turns), "feedback": len(fbs)}
            for mode in a.modes.split(","):
                for b in [int(x) for x in a.batch_sizes.split(",")]:
                    seqs = [None] + ([int(x) for x in a.max_seq.split(",")] if a.max_seq and mode == "ingestor" else [])
                    for ms in seqs:
                        if mode == "ingestor":
                            row = run_ingestor(stack, turns, fbs, b, kind, ms)
                        else:
                            row = run_faust(stack, turns, fbs, b, kind, logdir, a.timeout)
                        row["command"] = command_line()
                        row["encoder_backend"] = ENCODER_BACKEND
                        res["rows"].append(row)
                        print({k: v for k, v in row.items() if k != "curve"}, flush=True)
                        write_json(out, res)
    done = [r for r in res["rows"] if r["mode"] == "faust" and r.get("complete")]
    res["turns_per_s"] = max((r["turns_per_s"] for r in done if r["workload"] != "routed"), default=None)
    # the cold workload (each user-turn's query new to the ingest) at the default batch with the default encoder
    cold = [r for r in done if r["workload"] == "sim" and r.get("encoder_backend") == Settings().encoder_backend
            and r["ingest_batch_size"] == 256]
    res["cold_turns_per_s"] = cold[-1]["turns_per_s"] if cold else None
    res["routed_turns_per_s"] = max((r["turns_per_s"] for r in done if r["workload"] == "routed"), default=None)
    res["command"] = res["commands"][-1]
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    write_json(out, res)
    write_md(res)
    print(f"wrote {out} and .md", flush=True)


if __name__ == "__main__":
    main()
