"""The sentence encoder's backends side by side: speed on one thread, agreement, and what they do to eval AUC.

- Speed: distinct real questions of the default benchmark's test file, one thread, each backend through
  `prefstream.encoder.TextEncoder` (cache off: every text encoded); sentence-transformers on torch at batch 1
  is the floor. The ONNX backend (int8 per channel, exported once from the packaged weights) at batch 1, 4, 16
  with length-sorted batches.
- Agreement: cosine of each text's ONNX vector to its torch vector (mean, 5th percentile, min).
- Quality: `prefstream eval` (bench/quality.py's default benchmark, no ablations, fixed seed) with every
  embedding from one backend, then the other; GMTRouter and the per-user count in the same table.

- The static backend (prefstream/static_encoder.py, token vectors distilled once from the same model; its own
  vector space, so its cosine to torch says little): `--static` times it in one run beside torch and ONNX at
  batch 1, and evaluates it; the torch and ONNX eval rows already in encoder.json are kept.

    python bench/encoder.py [--texts 300] [--no-eval]
    python bench/encoder.py --static

Writes bench/results/encoder.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from bench.common import RESULTS, ROOT, clean_env, command_line, machine_facts, write_json  # noqa: E402
from prefstream.config import Settings  # noqa: E402

DATA = ROOT / "var" / "bench" / "default"


def questions(n: int) -> list[str]:
    seen: dict[str, None] = {}
    for line in (DATA / "test.jsonl").read_text().splitlines():
        for turn in json.loads(line).get("conversation", []):
            if turn.get("query"):
                seen.setdefault(turn["query"], None)
    return list(seen)[:n]


def rate(enc, texts: list[str], batch: int) -> tuple[float, np.ndarray]:
    """Texts per second with the cache off (every text through the model), and the vectors."""
    t = time.perf_counter()
    out = np.concatenate([enc.encode(texts[i:i + batch], batch_size=batch) for i in range(0, len(texts), batch)])
    return len(texts) / (time.perf_counter() - t), out


def speed(texts: list[str]) -> dict:
    import torch

    from prefstream.encoder import TextEncoder

    torch.set_num_threads(1)
    base = TextEncoder(backend="torch", cache_size=0)
    onnx = TextEncoder(backend="onnx", cache_size=0)
    base_rate, ref = rate(base, texts, 1)
    rows = {}
    for b in (1, 4, 16):
        r, v = rate(onnx, texts, b)
        cos = (v * ref).sum(1)
        rows[b] = {"texts_per_s": round(r, 1), "cosine_mean": round(float(cos.mean()), 4),
                   "cosine_p5": round(float(np.percentile(cos, 5)), 4), "cosine_min": round(float(cos.min()), 4)}
        print(f"onnx batch {b}: {rows[b]}", flush=True)
    best = max(rows, key=lambda b: rows[b]["texts_per_s"])
    from tokenizers import Tokenizer

    from prefstream.encoder import resolve_encoder_path

    tok = Tokenizer.from_file(str(Path(resolve_encoder_path(onnx.name)) / "tokenizer.json"))
    tok.no_truncation()
    tokens = [len(e.ids) for e in tok.encode_batch(texts)]
    return {"backend": "onnx", "batch": best, "texts_per_s": rows[best]["texts_per_s"],
            "baseline_texts_per_s": round(base_rate, 1), "cosine_mean": rows[best]["cosine_mean"],
            "cosine_p5": rows[best]["cosine_p5"], "onnx_by_batch": rows,
            "tokens_p50_p90_p99": [int(np.percentile(tokens, q)) for q in (50, 90, 99)], "texts": len(texts)}


def eval_auc(backend: str, steps: int, seed: int) -> dict:
    """bench/quality.py's default benchmark evaluated with every embedding from ``backend``."""
    from prefstream.config import get_settings
    from trainer.evaluate import run_evaluation
    from trainer.history import serving_history
    from trainer.config import GMTRouterConfig, TrainConfig

    os.environ["PREFSTREAM_ENCODER_BACKEND"] = backend
    get_settings.cache_clear()
    t = time.perf_counter()
    r = run_evaluation(DATA / "train.jsonl", DATA / "valid.jsonl", DATA / "test.jsonl", catalog=DATA / "llm_catalog.json",
                       config=TrainConfig(model=GMTRouterConfig(), seed=seed, steps=steps), history=serving_history(),
                       ablations=False)
    count = r["baselines"]["per_user_majority"]
    return {"auc": round(r["gmtrouter"]["auc"], 4), "accuracy": round(r["gmtrouter"]["accuracy"], 4),
            "per_user_count_accuracy": round(count["accuracy"], 4), "per_user_count_auc": round(count["auc"], 4),
            "pairs": r["gmtrouter"]["pairs"], "seconds": round(time.perf_counter() - t, 1)}


def seq_lengths(texts: list[str], lengths: list[int], steps: int, seed: int, previous: dict | None = None,
                known: dict | None = None) -> dict:
    """The ONNX encoder at each max sequence length: texts/s (one thread, batch 1) and eval AUC (taken from
    ``previous`` rows when given: a speed-only re-run; ``known``: lengths whose eval is already in encoder.json,
    same steps and seed); picks the shortest within 0.005 AUC and 0.1 accuracy points of the longest."""
    from prefstream.encoder import TextEncoder

    rows = {}
    for n in lengths:
        enc = TextEncoder(backend="onnx", cache_size=0, max_seq_length=n)
        enc.encode(texts[:20])  # warm-up: the session's first runs are slow
        r, _ = rate(enc, texts, 1)
        os.environ["PREFSTREAM_ENCODER_MAX_SEQ_LENGTH"] = str(n)
        source = previous or known or {}
        quality = {k: v for k, v in source[str(n)].items() if k != "texts_per_s"} if str(n) in source \
            else eval_auc("onnx", steps, seed)
        rows[n] = {"texts_per_s": round(r, 1), **quality}
        print(f"max_seq_length {n}: {rows[n]}", flush=True)
    os.environ.pop("PREFSTREAM_ENCODER_MAX_SEQ_LENGTH", None)
    best = max(lengths)
    chosen = min(n for n in lengths if rows[n]["auc"] >= rows[best]["auc"] - 0.005
                 and rows[n]["accuracy"] >= rows[best]["accuracy"] - 0.001)
    return {"by_length": rows, "chosen": chosen,
            "rule": "shortest length within 0.005 eval AUC and 0.1 accuracy points of the longest"}


def static_rows(texts: list[str], steps: int, seed: int, evaluate: bool) -> dict:
    """The static backend beside the transformer's two backends (one thread, batch 1 each, same texts, cache off),
    and its eval AUC."""
    import torch

    from prefstream.encoder import TextEncoder

    torch.set_num_threads(1)
    encs = {b: TextEncoder(backend=b, cache_size=0) for b in ("torch", "onnx", "static")}
    encs["onnx"].encode(texts[:20])  # warm-up: an ONNX session's first runs are slow
    rows, vecs = {}, {}
    for b, enc in encs.items():
        r, vecs[b] = rate(enc, texts, 1)
        rows[b] = {"texts_per_s": round(r, 1)}
    r64, _ = rate(encs["static"], texts, 64)
    cos = (vecs["static"] * vecs["torch"]).sum(1)
    out = {"by_backend": rows, "static_batch64_texts_per_s": round(r64, 1),
           "speedup_vs_onnx": round(rows["static"]["texts_per_s"] / rows["onnx"]["texts_per_s"], 1),
           "speedup_vs_torch": round(rows["static"]["texts_per_s"] / rows["torch"]["texts_per_s"], 1),
           "cosine_to_torch_mean": round(float(cos.mean()), 4)}
    print(out, flush=True)
    if evaluate:
        torch.set_num_threads(2)
        out["eval"] = eval_auc("static", steps, seed)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=300, help="distinct questions timed")
    ap.add_argument("--no-eval", action="store_true", help="speed and agreement only")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq-lengths", help="only: the ONNX encoder at these max sequence lengths (e.g. 128,256): "
                    "speed and eval AUC, added to encoder.json as max_seq_length")
    ap.add_argument("--static", action="store_true", help="only: the static backend beside torch and ONNX (speed, "
                    "eval AUC), added to encoder.json as static")
    args = ap.parse_args()
    clean_env()
    if args.static:
        path = RESULTS / "encoder.json"
        res = json.loads(path.read_text()) if path.exists() else {}
        load0 = os.getloadavg()
        res["static"] = static_rows(questions(args.texts), args.steps, args.seed, not args.no_eval)
        res["static"].update(command=command_line(), load_before=list(load0), load_after=list(os.getloadavg()))
        write_json(path, res)
        (RESULTS / "encoder.md").write_text(markdown(res))
        print(markdown(res))
        return 0
    if args.seq_lengths:
        import torch

        torch.set_num_threads(2)
        path = RESULTS / "encoder.json"
        res = json.loads(path.read_text()) if path.exists() else {}
        load0 = os.getloadavg()
        previous = res.get("max_seq_length", {}).get("by_length") if args.no_eval else None
        if previous is None and "eval" in res and "onnx" in res["eval"]:  # the default length was evaluated already
            previous_default = {str(Settings().encoder_max_seq_length): res["eval"]["onnx"]}
        else:
            previous_default = {}
        res["max_seq_length"] = seq_lengths(questions(args.texts), [int(x) for x in args.seq_lengths.split(",")],
                                            args.steps, args.seed, previous, previous_default)
        res["max_seq_length"].update(command=command_line(), load_before=list(load0), load_after=list(os.getloadavg()))
        write_json(path, res)
        (RESULTS / "encoder.md").write_text(markdown(res))
        print(markdown(res))
        return 0
    load0 = os.getloadavg()
    res = {"command": command_line(), "machine": machine_facts(), **speed(questions(args.texts))}
    if not args.no_eval:
        import torch

        torch.set_num_threads(2)
        res["eval"] = {b: eval_auc(b, args.steps, args.seed) for b in ("torch", "onnx")}
        res["eval_auc"], res["baseline_eval_auc"] = res["eval"]["onnx"]["auc"], res["eval"]["torch"]["auc"]
    res["load_before"], res["load_after"] = list(load0), list(os.getloadavg())
    write_json(RESULTS / "encoder.json", res)
    (RESULTS / "encoder.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(r: dict) -> str:
    L = ["# Sentence encoder backends\n", f"Command: `{r['command']}`\n",
         f"{r['texts']} distinct questions of the default benchmark (tokens p50/p90/p99 {r['tokens_p50_p90_p99']}), "
         f"one thread, cache off; load average {r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after (2 cores).\n",
         "| backend | batch | texts/s | cosine to torch: mean | p5 | min |", "|---|---|---|---|---|---|",
         f"| sentence-transformers (torch) | 1 | {r['baseline_texts_per_s']} | 1 | 1 | 1 |"]
    for b, row in r["onnx_by_batch"].items():
        L.append(f"| ONNX int8 per channel | {b} | {row['texts_per_s']} | {row['cosine_mean']} | {row['cosine_p5']} | "
                 f"{row['cosine_min']} |")
    if "eval" in r:
        L += ["", "`prefstream eval` on the default benchmark (seed 0, no ablations), every embedding from one backend:", "",
              "| backend | GMTRouter AUC | GMTRouter accuracy | per-user count accuracy | pairs | seconds |",
              "|---|---|---|---|---|---|"]
        for b, e in r["eval"].items():
            L.append(f"| {b} | {e['auc']} | {e['accuracy']} | {e['per_user_count_accuracy']} | {e['pairs']} | {e['seconds']} |")
        L.append(f"\nAUC change with ONNX: {r['eval_auc'] - r['baseline_eval_auc']:+.4f} (target: loss ≤ 0.005).")
    if "max_seq_length" in r:
        m = r["max_seq_length"]
        L += ["", f"## Max sequence length (ONNX; `{m['command']}`; load {m['load_before'][0]:.2f} before, "
              f"{m['load_after'][0]:.2f} after)", "", "| tokens | texts/s (1 thread, batch 1) | GMTRouter AUC | accuracy |",
              "|---|---|---|---|"]
        L += [f"| {n} | {row['texts_per_s']} | {row['auc']} | {row['accuracy']} |" for n, row in m["by_length"].items()]
        L.append(f"\nChosen: **{m['chosen']}** ({m['rule']}).")
    if "static" in r:
        st = r["static"]
        L += ["", f"## Static backend (`{st['command']}`; load {st['load_before'][0]:.2f} before, "
              f"{st['load_after'][0]:.2f} after)", "",
              "Token vectors distilled once from the same packaged model; a text is the log(1 + id)-weighted mean of "
              "its tokens' rows. Another vector space (cosine to the torch vectors "
              f"{st['cosine_to_torch_mean']}): a model is trained and served on one backend.", "",
              "| backend | texts/s (1 thread, batch 1, same texts, one run) |", "|---|---|"]
        L += [f"| {b} | {row['texts_per_s']} |" for b, row in st["by_backend"].items()]
        L.append(f"\nStatic at batch 64: {st['static_batch64_texts_per_s']} texts/s. Static is "
                 f"{st['speedup_vs_onnx']}x ONNX and {st['speedup_vs_torch']}x torch at batch 1.")
        if "eval" in st:
            e, base = st["eval"], r.get("eval", {})
            L += ["", "| backend | GMTRouter AUC | GMTRouter accuracy | per-user count accuracy |", "|---|---|---|---|"]
            L += [f"| {b} | {x['auc']} | {x['accuracy']} | {x['per_user_count_accuracy']} |"
                  for b, x in {**base, **({"onnx (128 tokens)": r['max_seq_length']['by_length']['128']}
                                         if 'max_seq_length' in r else {}), "static": e}.items()
                  if "per_user_count_accuracy" in x]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
