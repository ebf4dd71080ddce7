"""One HGT layer on serving-sized batches: PyG's ``HGTConv`` forward vs ``trainer.hgt_fast.hgt_forward``.

Same layer (one fixed-seed GMTRouter's first conv), same inputs: the graph ``build_batch`` makes for B users
with k = 10 visible turns each and 9 candidate LLMs; node features random [N, hidden]. Median of --repeat
calls per method, alternated, torch 1 thread, no gradients. Also the whole ``Scorer.score_batch`` (which uses
``hgt_forward``) at the same batch sizes, for scale.

    python bench/hgt_layer.py                      # batches 1, 16, 64
Writes bench/results/hgt_layer.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import RESULTS, command_line, machine_facts, write_json

D, K, N_LLM = 384, 10, 9


def subgraph(u: str, rng: np.random.Generator):
    from graphstore.schema import UserSubgraph

    i = np.arange(K)
    return UserSubgraph(user_id=u, turn_ids=[f"{u}t{j}" for j in i], conversation_ids=[f"c{j // 3}" for j in i],
                        llm_ids=[f"m{j % N_LLM}" for j in i], query_keys=[f"{u}q{j // 2}" for j in i],
                        turn_index=i % 3, timestamps=i, query_emb=rng.normal(size=(K, D)).astype(np.float32),
                        rating=np.where(i % 2 == 0, 1.0, np.nan).astype(np.float32),
                        prev=np.where(i % 3 == 0, -1, i - 1))


def median_ms(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return round(float(np.median(ts)) * 1000, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()

    import torch

    from graphstore.schema import LLMInfo
    from trainer.graph import Request, build_batch
    from trainer.hgt_fast import hgt_forward
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.scorer import Scorer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    scorer = Scorer(GMTRouter(GMTRouterConfig()), "bench")
    conv, h = scorer.model.encoder.convs[0], scorer.model.cfg.hidden
    cands = [LLMInfo(f"m{i}", "d", 1.0, 1.0, rng.normal(size=D).astype(np.float32)) for i in range(N_LLM)]
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        items = [(subgraph(f"u{i}", rng), rng.normal(size=D).astype(np.float32), cands) for i in range(b)]
        reqs = [Request(i, q, np.stack([c.embedding for c in cs])) for i, (_, q, cs) in enumerate(items)]
        data = build_batch([it[0] for it in items], reqs, scorer.llm_emb).data
        x = {t: torch.randn(data[t].num_nodes, h) for t in data.node_types}
        edges = {et: data[et].edge_index for et in data.edge_types}
        with torch.no_grad():
            pyg, fast = [], []
            for _ in range(3):  # alternate, so drifting machine load hits both
                pyg.append(median_ms(lambda: conv(x, edges), args.repeat // 3))
                fast.append(median_ms(lambda: hgt_forward(conv, x, edges), args.repeat // 3))
        row = {"batch": b, "nodes": int(sum(v.size(0) for v in x.values())),
               "edges": int(sum(e.size(1) for e in edges.values())), "pyg_layer_ms": float(np.median(pyg)),
               "fast_layer_ms": float(np.median(fast)),
               "score_batch_ms": median_ms(lambda: scorer.score_batch(items), args.repeat)}
        row["speedup"] = round(row["pyg_layer_ms"] / row["fast_layer_ms"], 2)
        rows.append(row)
        print(row, flush=True)

    out = {"command": command_line(), "machine": machine_facts(), "runs": rows}
    write_json(RESULTS / "hgt_layer.json", out)
    md = ["# One HGT layer: PyG HGTConv vs trainer/hgt_fast.py", "", f"Command: `{out['command']}`  ",
          f"Machine: load {out['machine'].get('loadavg_1_5_15')}, torch 1 thread, commit "
          f"{out['machine'].get('git_commit')}, {out['machine'].get('date_utc')}.", "",
          "| batch (users) | nodes | edges | PyG HGTConv ms | hgt_forward ms | speed-up | whole score_batch ms |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['batch']} | {r['nodes']} | {r['edges']} | {r['pyg_layer_ms']} | {r['fast_layer_ms']} | "
           f"{r['speedup']}x | {r['score_batch_ms']} |" for r in rows]
    md += ["", "Same outputs and gradients: tests/trainer/test_hgt_fast.py. The model runs two layers."]
    (RESULTS / "hgt_layer.md").write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS / 'hgt_layer.json'} and .md")


if __name__ == "__main__":
    main()
