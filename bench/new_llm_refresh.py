"""How much does one refresh of the periodic trainer give back on an LLM that training never saw?

    python bench/quality.py            # the default benchmark and the model trained with every LLM
    python bench/new_llm_refresh.py    # -> bench/results/new_llm_refresh.{json,md}

This continues bench/new_llm.py. The held-out LLM X was registered when each user's test period began, so
training never saw it. At the median timestamp of the test period, the periodic trainer refreshes. Like
trainer/refresh.py it starts from the serving model, here the defaults trained without X. It trains
``RefreshConfig.steps`` steps on everything rated so far, X's first feedback included, and validates on a fifth
of those samples.

Every method is scored on the test pairs after that time, on the same histories:
- serving: the model trained without X, before the refresh;
- refreshed: the same model after the refresh;
- trained with X: bench/quality.py's model, which saw X's training answers;
- the per-user win count.

The files with X's test-period answers before the refresh time moved into the training split are written
next to bench/new_llm.py's. The script runs on two threads; run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, model_path  # noqa: E402
from bench.new_llm import DATA, compare, filtered_copy, fit_on, load, pair_table, pts, scored  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.refresh import RefreshConfig, refit  # noqa: E402

METHODS = ("serving", "refreshed", "with_x", "count")


def refresh_layout(filtered: Path, out: Path) -> tuple[Path, int]:
    """``out``: ``filtered``'s train split plus its test answers from before the test period's median timestamp
    (those are what a refresh at that time trains on), its valid split, and the later test answers as the test
    split. Returns (``out``, that timestamp in epoch ms)."""
    out.mkdir(parents=True, exist_ok=True)
    test = (filtered / "test.jsonl").read_text().splitlines()
    stamps = [json.loads(line)["tstamp"] for line in test]
    cut = int(np.median(stamps))
    early = [line for line, ts in zip(test, stamps) if ts < cut]
    late = [line for line, ts in zip(test, stamps) if ts >= cut]
    train = (filtered / "train.jsonl").read_text().splitlines() + early
    for name, lines in (("train", train), ("test", late)):
        (out / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
    for name in ("valid.jsonl", "llm_catalog.json"):
        (out / name).write_bytes((filtered / name).read_bytes())
    return out, cut


def refreshed_model(serving, ds, steps: int):
    """``serving`` refitted ``steps`` steps on ``ds``'s training split by the refresh cycle's own step
    (trainer.refresh.refit), and the seconds it took."""
    from trainer.data import config_samples

    t0 = time.perf_counter()
    res = refit(config_samples(ds, TrainConfig(model=serving.cfg)), steps, serving=serving, llms=ds.llms,
                progress=True)
    return res.model, time.perf_counter() - t0


def markdown(res: dict) -> str:
    md = ["# An LLM that training never saw, after one refresh", "",
          f"Command: `{res['command']}`. Default benchmark. The held-out LLM is in neither the train nor the valid "
          f"file, and the refresh ran at the test period's median timestamp ({res['refresh_at_ms']} ms). Test pairs "
          "after that time; in brackets, points with a 95 % interval from resampling whole users. Load average "
          f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end.", "",
          "| pairs | serving (trained without it) | refreshed | trained with it | per-user count | refreshed - serving "
          "| refreshed - count | refreshed - with |", "|---|---|---|---|---|---|---|---|"]
    for part, label in (("with_x", f"involving {res['llm']}"), ("without_x", "the rest")):
        a, vs = res[part], res[part]["vs"]
        md.append(f"| {label} ({res['pairs_' + part]}) | {a['serving']:.4f} | {a['refreshed']:.4f} | {a['with_x']:.4f} "
                  f"| {a['count']:.4f} | {pts(vs['refreshed - serving'])} | {pts(vs['refreshed - count'])} | "
                  f"{pts(vs['refreshed - with_x'])} |")
    md += ["", f"Training seconds (two threads): the serving model ({res['serving_steps']} steps) "
           f"{res['train_s']['serving']:.0f}, the refresh ({res['refresh_steps']} steps) "
           f"{res['train_s']['refresh']:.0f}.", ""]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="llama3-chatqa-1.5-70b", help="the held-out LLM of the default benchmark")
    ap.add_argument("--steps", type=int, default=RefreshConfig().steps, help="steps of the refresh")
    ap.add_argument("--serving-steps", type=int, default=TrainConfig().steps,
                    help="training steps of the serving model (fewer: a quick check)")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "new_llm", help="filtered copies go here")
    ap.add_argument("--out", type=Path, default=RESULTS / "new_llm_refresh.json")
    args = ap.parse_args()
    if not model_path(DATA, TrainConfig()).exists():
        ap.error(f"no trained model in {DATA}: run python bench/quality.py first")
    import torch

    from trainer.baselines import PerUserMajority
    from trainer.checkpoint import load_checkpoint
    from trainer.data import online_samples

    torch.set_num_threads(2)
    facts = machine_facts()
    filtered = filtered_copy(DATA, args.work / args.llm, args.llm)
    layout, cut = refresh_layout(filtered, args.work / f"{args.llm}-refresh")
    fitted, serving_s = fit_on(load(filtered), TrainConfig(steps=args.serving_steps), progress=True)
    serving = fitted.model
    ds = load(layout)
    refreshed, refresh_s = refreshed_model(serving, ds, args.steps)
    groups, scores = scored(serving, ds)
    count = PerUserMajority().fit(ds).score(online_samples(ds, "test", history=10**9, embed=False))
    tables = {"serving": pair_table(groups, scores, args.llm),
              "refreshed": pair_table(*scored(refreshed, ds), args.llm),
              "with_x": pair_table(*scored(load_checkpoint(model_path(DATA, TrainConfig())).model, ds), args.llm),
              "count": pair_table(groups, count, args.llm)}
    inv = tables["count"]["involves"]
    res: dict = {"command": command_line(), "machine": facts, "llm": args.llm, "refresh_at_ms": cut,
                 "refresh_steps": args.steps, "serving_steps": args.serving_steps, "pairs_with_x": int(inv.sum()),
                 "pairs_without_x": int((~inv).sum()),
                 "train_s": {"serving": serving_s, "refresh": refresh_s}}
    for part, mask in (("with_x", inv), ("without_x", ~inv)):
        res[part] = {m: float(tables[m]["correct"][mask].mean()) for m in METHODS}
        res[part]["vs"] = {f"refreshed - {m}": compare(tables["refreshed"], tables[m], mask)
                           for m in ("serving", "count", "with_x")}
    res["loadavg_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
