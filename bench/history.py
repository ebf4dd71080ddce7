"""Serve what you evaluate: accuracy against the number of visible turns, next to what reading and scoring
that many turns costs a router.

    python bench/history.py        # -> bench/results/history.{json,md,png}

1. Accuracy: on both quality benchmarks (bench/quality.py's files), GMTRouter is trained once with the
   evaluation's defaults, then every test comparison is predicted from the last N turns, for each N
   (the per-user win count with the same N next to it, and with the whole past).
2. Cost: a FalkorDB server holding 100k users (20 turns each, bulk-loaded as bench/graph_store.py does) plus
   1,000 users with 500 turns; p50/p99 of the single-user read and of a 64-user batched read of N turns
   of the long users; scorer milliseconds per decision (64 requests of N turns, all 9 LLMs as candidates).
The serving default (PREFSTREAM_HISTORY_TURNS) is the shortest N within TOLERANCE (0.2 points) of the best
accuracy on both benchmarks; `prefstream eval` defaults to the same N (tests/trainer/test_history_default.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.graph_store import Data, bulk_load, read_latency  # noqa: E402
from bench.common import command_line, machine_facts, trained_model  # noqa: E402
from bench.common import catalog_for  # noqa: E402
from bench.quality import data_folder, simulate  # noqa: E402
from trainer.baselines import PerUserMajority  # noqa: E402
from trainer.data import iter_online_samples, load_dataset, online_samples  # noqa: E402
from trainer.evaluate import score_stream  # noqa: E402
from trainer.history import last_turns, serving_history  # noqa: E402
from trainer.metrics import pair_metrics  # noqa: E402
from trainer.train import TrainConfig  # noqa: E402

ALL = 100_000  # "the whole past"
# How much accuracy a shorter (cheaper) history may give away. It was 0.5 points until the quality targets came
# within a few tenths of a point of their lines; 0.2 stays under the half-width of the 95 % interval of a paired
# difference between two model variants on the same pairs (bench/results/quality_ci.md: no_memory, dot_head).
TOLERANCE = 0.002


def accuracy_curve(kind: str, data_root: Path, lengths: list[int], seed: int) -> list[dict]:
    data = data_folder(data_root, kind, seed)
    simulate(kind, data, seed)
    files = {s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}
    ds = load_dataset(files, catalog_for(kind, data), progress=False)
    cfg = TrainConfig(seed=seed)
    model = trained_model(data, ds, cfg, serving_history())
    count = PerUserMajority().fit(ds)
    full = online_samples(ds, "test", history=10**9, embed=False)
    count_all = pair_metrics([g for s in full for g in s.targets], count.score(full))["accuracy"]
    rows = []
    for n in lengths:
        gs, sc = score_stream(model, iter_online_samples(ds, "test", turns=n))
        m = pair_metrics(gs, sc)
        short = [type(s)(last_turns(s.visible, n), s.targets) for s in full]
        c = pair_metrics(gs, count.score(short))["accuracy"]
        rows.append({"turns": n, "accuracy": m["accuracy"], "auc": m["auc"], "per_user_majority": c,
                     "per_user_majority_all": count_all})
        print(f"{kind} N={n}: gmtrouter {m['accuracy']:.4f} (AUC {m['auc']:.4f}), per-user count {c:.4f}", flush=True)
    return rows


def read_costs(lengths: list[int], users: int, long_users: int, long_turns: int, reads: int) -> dict[int, dict]:
    """Read p50/p99 of N turns of long-history users on a FalkorDB server with ``users`` other users."""
    from graphstore import open_store
    from stack import services
    from prefstream.config import Settings
    from prefstream.procs import free_port, stop

    tmp = Path(tempfile.mkdtemp(prefix="bench-history-"))
    port = free_port()
    proc = services.start_graph(port, tmp / "data", tmp / "logs")
    out = {}
    try:
        services.wait_graph(proc, port)
        store = open_store(Settings(graph_uri=f"redis://127.0.0.1:{port}", graph_name="history"))
        data = Data(20_000)
        bulk_load(store, data, range(long_users, users + long_users))
        long = LongData(data, long_turns)
        bulk_load(store, long, range(long_users))
        rng = np.random.default_rng(0)
        for n in lengths:
            lat = read_latency(store, long_users, min(n, long_turns), reads, rng)
            out[n] = lat
            print(f"read N={n}: single p50 {lat['subgraph_p50_ms']:.2f} ms p99 {lat['subgraph_p99_ms']:.2f}; "
                  f"64-user batch p50 {lat['batch64_p50_ms']:.1f} ms", flush=True)
        store.close()
    finally:
        stop(proc)
    return out


class LongData(Data):
    """Users with ``turns`` turns each (two LLMs answer every user-turn), same texts and embeddings."""

    def __init__(self, base: Data, turns: int) -> None:
        self.emb, self.texts, self.n = base.emb, base.texts, turns // 2

    def turns(self, u: int):
        from prefstream.events import ChatTurn

        out = []
        t0 = 1_600_000_000_000 + u * 1000
        for i in range(self.n):
            q = (u * 7919 + i * 1299709) % len(self.texts)
            for j, m in enumerate(("m1", "m2")):
                out.append((ChatTurn.model_construct(
                    event_id=f"u{u}-c{i // 3}-t{i % 3}-{m}", user_id=f"u{u}", conversation_id=f"u{u}-c{i // 3}",
                    turn_index=i % 3, timestamp=t0 + i * 60_000 + j, query=self.texts[q], llm_id=m, response="ok"),
                    self.emb[q], None))
        return out


def score_costs(lengths: list[int], seed: int) -> dict[int, float]:
    """Scorer ms per decision for 64 requests of N visible turns each (the default benchmark's test users)."""
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.scorer import Scorer

    data = ROOT / "var" / "bench" / "default"
    ds = load_dataset({s: data / f"{s}.jsonl" for s in ("train", "test")}, data / "llm_catalog.json", progress=False)
    torch.manual_seed(seed)
    sc = Scorer(GMTRouter(GMTRouterConfig()), "bench", {k: v.embedding for k, v in ds.llms.items()})
    rng = np.random.default_rng(seed)
    full = online_samples(ds, "test", history=10**9)
    full.sort(key=lambda s: -len(s.visible))
    longest = full[:400]
    cands = list(ds.llms.values())
    out = {}
    for n in lengths:
        items = [(last_turns(longest[i].visible, n), longest[i].targets[0].query_emb, cands)
                 for i in rng.choice(len(longest), 64)]
        sc.score_batch(items)
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < 3.0:
            sc.score_batch(items)
            reps += 1
        out[n] = 1000 * (time.perf_counter() - t0) / (reps * 64)
        print(f"score N={n}: {out[n]:.2f} ms per decision (batch 64)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="10,20,40,80,120,160,240,480,100000", help="visible turns N (100000 = all)")
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=100_000, help="background users in the graph")
    ap.add_argument("--reads", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "history.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    load0 = os.getloadavg()
    curves = {kind: accuracy_curve(kind, args.data, lengths, args.seed) for kind in ("default", "families")}
    scores = score_costs(lengths, args.seed)
    reads = read_costs([n for n in lengths if n < ALL], args.users, 1000, 500, args.reads)
    best = {k: max(r["accuracy"] for r in rows) for k, rows in curves.items()}
    good = [n for n in lengths if all(next(r for r in curves[k] if r["turns"] == n)["accuracy"] >= best[k] - TOLERANCE
                                      for k in curves)]
    chosen = min(good)
    curve = []
    for i, n in enumerate(lengths):
        d, f = curves["default"][i], curves["families"][i]
        r = reads.get(n, reads[max(reads)])
        curve.append({"turns": n, "accuracy": d["accuracy"], "auc": d["auc"], "families_accuracy": f["accuracy"],
                      "per_user_majority": d["per_user_majority"], "families_per_user_majority": f["per_user_majority"],
                      "read_p50_ms": r["subgraph_p50_ms"], "read_p99_ms": r["subgraph_p99_ms"],
                      "read64_p50_ms": r["batch64_p50_ms"], "read64_p99_ms": r["batch64_p99_ms"],
                      "score_ms": scores[n]})
    from prefstream.config import Settings

    out = {"command": command_line(),
           "curve": curve, "best_accuracy": best, "chosen_by_rule": chosen, "tolerance": TOLERANCE,
           "serving_history_turns": Settings().history_turns, "eval_history_turns": serving_history(),
           "per_user_majority_all_past": {k: rows[0]["per_user_majority_all"] for k, rows in curves.items()},
           "load_avg_start": load0, "load_avg_end": os.getloadavg(), "machine": machine_facts(),
           "note": "N = 100000 means the whole past; reads of N >= 500 return the long users' 500 turns"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    md = ["# Accuracy against visible history, and its serving cost\n", f"Command: `{out['command']}`\n",
          f"Serving history (PREFSTREAM_HISTORY_TURNS) = {out['serving_history_turns']}, `prefstream eval` default = "
          f"{out['eval_history_turns']}; the rule (shortest N within {100 * TOLERANCE:.1f} points of the best on both "
          f"benchmarks) picks "
          f"{chosen}. Load average {load0[0]:.2f} -> {out['load_avg_end'][0]:.2f}.\n",
          "| N turns | default acc | AUC | families acc | per-user count (same N) default / families | read p50 / p99 ms "
          "| 64-user read p50 / p99 ms | score ms/decision |", "|---|---|---|---|---|---|---|---|"]
    for c in curve:
        md.append(f"| {'all' if c['turns'] >= ALL else c['turns']} | {c['accuracy']:.4f} | {c['auc']:.4f} | "
                  f"{c['families_accuracy']:.4f} | {c['per_user_majority']:.4f} / {c['families_per_user_majority']:.4f} | "
                  f"{c['read_p50_ms']:.2f} / {c['read_p99_ms']:.2f} | {c['read64_p50_ms']:.1f} / {c['read64_p99_ms']:.1f} | "
                  f"{c['score_ms']:.2f} |")
    md.append(f"\nPer-user count over the whole past: {out['per_user_majority_all_past']}.")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    plot(curve, args.out.with_suffix(".png"), out["serving_history_turns"])
    print("\n".join(md))
    return 0


def plot(curve: list[dict], path: Path, serving: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [min(c["turns"], 1000) for c in curve]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(x, [c["accuracy"] for c in curve], "o-", label="GMTRouter, default benchmark")
    a.plot(x, [c["families_accuracy"] for c in curve], "s-", label="GMTRouter, families benchmark")
    a.plot(x, [c["per_user_majority"] for c in curve], "o--", label="per-user count, default")
    a.plot(x, [c["families_per_user_majority"] for c in curve], "s--", label="per-user count, families")
    a.axvline(serving, color="gray", ls=":", label=f"serving default ({serving})")
    a.set_xscale("log")
    a.set_xlabel("visible turns N (1000 = the whole past)")
    a.set_ylabel("pairwise accuracy")
    a.legend(fontsize=7)
    b.plot(x, [c["read_p50_ms"] for c in curve], "o-", label="single-user read p50")
    b.plot(x, [c["read64_p50_ms"] / 64 for c in curve], "s-", label="64-user read p50 / 64")
    b.plot(x, [c["score_ms"] for c in curve], "^-", label="scorer per decision (batch 64)")
    b.set_xscale("log")
    b.set_xlabel("visible turns N")
    b.set_ylabel("ms")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
