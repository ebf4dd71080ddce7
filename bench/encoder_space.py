"""How far apart the packaged encoders' vector spaces are: what the stored-space check's threshold rests on.

    python bench/encoder_space.py          # -> bench/results/encoder_space.{json,md}

GraphStore.claim_embedding_space, on a graph that holds query vectors but no recorded space, encodes some stored
texts again and refuses when the median cosine to the stored vectors is under graphstore.base.SPACE_CHECK_COSINE.
This encodes ``--texts`` distinct query texts of the default simulator with each backend (torch, onnx, static)
and gives the cosine of every text's two vectors for each pair of backends: one space should sit above the
threshold, two spaces below. A measurement, not a test (tests/test_encoder_backends.py checks the sides).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402


def main() -> int:
    from graphstore.base import SPACE_CHECK_COSINE
    from prefstream.encoder import TextEncoder
    from trainer.simulate import SimConfig, Simulator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=200, help="distinct query texts of the default simulator")
    ap.add_argument("--out", type=Path, default=RESULTS / "encoder_space.json")
    args = ap.parse_args()
    texts = list(dict.fromkeys(e.query for e in Simulator(SimConfig(seed=0)).events()
                               if e.type == "chat_turn"))[:args.texts]
    vecs = {}
    for b in ("torch", "onnx", "static"):
        enc = TextEncoder(backend=b, cache_size=0)
        v = np.asarray(enc.encode(texts), dtype=np.float64)
        vecs[b] = (enc.space, v / np.linalg.norm(v, axis=1, keepdims=True))
    pairs = {}
    for a, b in itertools.combinations(vecs, 2):
        cos = (vecs[a][1] * vecs[b][1]).sum(1)
        pairs[f"{a} vs {b}"] = {"same_space": vecs[a][0] == vecs[b][0], "min": float(cos.min()),
                                "median": float(np.median(cos)), "max": float(cos.max())}
        print(a, b, pairs[f"{a} vs {b}"], flush=True)
    out = {"command": command_line(), "machine": machine_facts(), "texts": len(texts),
           "threshold": SPACE_CHECK_COSINE, "spaces": {b: s for b, (s, _) in vecs.items()}, "pairs": pairs}
    return write_results(args.out, out, markdown)


def markdown(out: dict) -> str:
    md = ["# The packaged encoders' spaces, as the stored-space check sees them", "",
          f"`{out['command']}`: {out['texts']} distinct query texts of the default simulator, each encoded by two "
          f"backends; cosine of its two vectors. The check refuses a median under {out['threshold']}. Load average "
          f"{out['machine']['loadavg_1_5_15'][0]:.2f} at the start, {out['loadavg_end'][0]:.2f} at the end.", "",
          "| backends | one space | min | median | max |", "|---|---|---|---|---|"]
    md += [f"| {k} | {p['same_space']} | {p['min']:.3f} | {p['median']:.3f} | {p['max']:.3f} |"
           for k, p in out["pairs"].items()]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
