"""How well is an LLM routed that training never saw? (an LLM registered after the model was trained)

    python bench/quality.py        # writes the default benchmark and trains the model this compares with
    python bench/new_llm.py        # -> bench/results/new_llm.{json,md}

GMTRouter has no per-LLM parameters: an LLM is its description embedding (and, with
``GMTRouterConfig.llm_prices``, its prices), so one registered after training is scored at once. This measures
how well. For each held-out LLM X of the default benchmark, X's answers are removed from the training and
validation files: X was registered when the test period began, so users meet it only there, and their earlier
test turns with X become their history with it as a router serving them would see it. The test file is unchanged.
On the same test pairs, split into pairs that involve X and pairs that do not:
- ``trained without X``: the defaults trained on the filtered files, as `prefstream eval` trains;
- ``... with prices``: the same with ``llm_prices``, whose price input could carry a user's price weight to X;
- ``trained with X``: bench/quality.py's saved model (it saw X's training answers), scored on the same
  filtered histories: the same inputs, only training differs;
- the per-user win count over each user's whole past, which needs no training.
Differences are in points with a 95 % interval from resampling whole users (trainer.metrics.user_bootstrap).
Trainings run as separate one-thread processes, two at a time; run it alone (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, model_path  # noqa: E402
from trainer.config import GMTRouterConfig, TrainConfig  # noqa: E402

DATA = ROOT / "var" / "bench" / "default"
#: the cheapest LLM (its price, 0.1, is no other's) and one of the three dearest (0.9)
HELD_OUT = ("gemma-2-9b-it", "llama3-chatqa-1.5-70b")
METHODS = ("without_x", "without_x_prices", "with_x", "count")


def filtered_copy(data: Path, out: Path, llm: str) -> Path:
    """``out`` with ``data``'s benchmark files, minus ``llm``'s answers in the train and valid splits (GMTRouter
    JSONL: one line per answer); test and the catalog as they are. Returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        lines = (data / f"{split}.jsonl").read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["model"] != llm]
        (out / f"{split}.jsonl").write_text("".join(line + "\n" for line in kept))
    for name in ("test.jsonl", "llm_catalog.json"):
        shutil.copyfile(data / name, out / name)
    return out


def load(data: Path):
    from trainer.data import load_dataset

    return load_dataset({s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}, data / "llm_catalog.json",
                        progress=False)


def scored(model, ds) -> tuple[list, list]:
    """(test groups, scores) of ``model`` on the served history, as `prefstream eval` scores."""
    import torch

    from trainer.data import iter_online_samples
    from trainer.evaluate import score_stream
    from trainer.history import serving_history

    with torch.no_grad():
        return score_stream(model.eval(), iter_online_samples(ds, "test", turns=serving_history()))


def pair_table(groups: list, scores: list, llm: str) -> dict[str, np.ndarray]:
    """Per test pair (metrics order): correct (1, 0, 0.5 for a tie), user, and whether ``llm`` is one of the two."""
    from trainer.metrics import pairs
    from trainer.promotion import pair_correct, pair_has

    users = [g.user_id for g in groups for _ in pairs(g)]
    return {"correct": pair_correct(groups, scores), "users": np.array(users), "involves": pair_has(groups, {llm})}


def fit_on(ds, cfg: TrainConfig, progress: bool = False):
    """(FitResult, seconds): ``cfg`` trained on ``ds``'s training split and validated on its valid split with the
    served history, as `prefstream eval` trains."""
    from trainer.data import config_samples, online_samples
    from trainer.history import serving_history
    from trainer.train import fit

    t0 = time.perf_counter()
    res = fit(config_samples(ds, cfg), online_samples(ds, "valid", turns=serving_history()), cfg, progress=progress,
              llms=ds.llms)
    return res, time.perf_counter() - t0


def train_without(data: str, prices: bool, llm: str, steps: int) -> dict:
    """Train the defaults (with ``llm_prices`` if ``prices``; ``steps`` steps) on the filtered files in ``data``,
    one torch thread; return the per-pair table and the training seconds."""
    import torch

    torch.set_num_threads(1)
    ds = load(Path(data))
    res, seconds = fit_on(ds, TrainConfig(model=dataclasses.replace(GMTRouterConfig(), llm_prices=prices), steps=steps))
    return {"table": pair_table(*scored(res.model, ds), llm), "train_s": seconds, "best_step": res.best_step}


def references(data: Path, llm: str) -> dict[str, dict]:
    """The model trained with X (bench/quality.py's) and the per-user win count, on the filtered histories."""
    from trainer.baselines import PerUserMajority
    from trainer.checkpoint import load_checkpoint
    from trainer.data import online_samples

    ds = load(data)
    with_x = load_checkpoint(model_path(DATA, TrainConfig())).model
    groups, scores = scored(with_x, ds)
    count = PerUserMajority().fit(ds).score(online_samples(ds, "test", history=10**9, embed=False))
    return {"with_x": pair_table(groups, scores, llm), "count": pair_table(groups, count, llm)}


def compare(a: dict, b: dict, mask: np.ndarray) -> dict:
    """a minus b in points on the masked pairs, with the 95 % interval over whole users."""
    from trainer.metrics import user_bootstrap

    if not np.array_equal(a["users"], b["users"]):
        raise ValueError("the two methods were scored on different test pairs")
    r = user_bootstrap(a["correct"][mask], b["correct"][mask], a["users"][mask])
    return {k: 100 * r[k] for k in ("diff", "low", "high")}


def summarize(tables: dict[str, dict]) -> dict:
    """Accuracy of every method on the pairs with and without X, and the paired differences that matter."""
    inv = tables["count"]["involves"]
    out: dict = {"pairs_with_x": int(inv.sum()), "pairs_without_x": int((~inv).sum())}
    for part, mask in (("with_x", inv), ("without_x", ~inv)):
        out[part] = {m: float(tables[m]["correct"][mask].mean()) for m in METHODS}
        out[part]["vs"] = {
            "without_x - count": compare(tables["without_x"], tables["count"], mask),
            "without_x - with_x": compare(tables["without_x"], tables["with_x"], mask),
            "without_x_prices - without_x": compare(tables["without_x_prices"], tables["without_x"], mask),
        }
    return out


def pts(d: dict) -> str:
    return f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def markdown(res: dict) -> str:
    md = ["# An LLM that training never saw", "",
          f"Command: `{res['command']}`. Default benchmark; each held-out LLM's answers removed from the train and "
          "valid files, the test file unchanged. Accuracy on the test pairs that involve the held-out LLM and on the "
          "rest; in brackets, points with a 95 % interval from resampling whole users. Load average "
          f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end.", "",
          "| held-out LLM | pairs | trained without it | with prices | trained with it | per-user count | "
          "without - count | without - with | prices - without |", "|---|---|---|---|---|---|---|---|---|"]
    for llm, r in res["held_out"].items():
        for part, label in (("with_x", "involving it"), ("without_x", "the rest")):
            a, vs = r[part], r[part]["vs"]
            md.append(f"| {llm}, {label} | {r['pairs_' + part]} | {a['without_x']:.4f} | {a['without_x_prices']:.4f} "
                      f"| {a['with_x']:.4f} | {a['count']:.4f} | {pts(vs['without_x - count'])} | "
                      f"{pts(vs['without_x - with_x'])} | {pts(vs['without_x_prices - without_x'])} |")
    secs = "; ".join(f"{llm}: {r['train_s']['without_x']:.0f} / {r['train_s']['without_x_prices']:.0f} (plain / prices)"
                     for llm, r in res["held_out"].items())
    md += ["", f"Training: the defaults, {res['steps']} steps; seconds (one torch thread, two runs at a time): "
           f"{secs}", ""]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llms", default=",".join(HELD_OUT),
                    help="held-out LLMs of the default benchmark (comma-separated)")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "new_llm", help="filtered copies go here")
    ap.add_argument("--steps", type=int, default=TrainConfig().steps, help="training steps (fewer: a quick check)")
    ap.add_argument("--out", type=Path, default=RESULTS / "new_llm.json")
    args = ap.parse_args()
    if not model_path(DATA, TrainConfig()).exists():
        ap.error(f"no trained model in {DATA}: run python bench/quality.py first")
    facts = machine_facts()
    llms = args.llms.split(",")
    dirs = {llm: filtered_copy(DATA, args.work / llm, llm) for llm in llms}
    jobs = [(llm, prices) for llm in llms for prices in (False, True)]
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = {job: pool.submit(train_without, str(dirs[job[0]]), job[1], job[0], args.steps) for job in jobs}
        trained = {job: f.result() for job, f in futures.items()}
    res: dict = {"command": command_line(), "machine": facts, "steps": args.steps, "held_out": {}}
    for llm in llms:
        tables = {"without_x": trained[(llm, False)]["table"], "without_x_prices": trained[(llm, True)]["table"],
                  **references(dirs[llm], llm)}
        res["held_out"][llm] = {**summarize(tables),
                                "train_s": {"without_x": trained[(llm, False)]["train_s"],
                                            "without_x_prices": trained[(llm, True)]["train_s"]},
                                "best_step": {"without_x": trained[(llm, False)]["best_step"],
                                              "without_x_prices": trained[(llm, True)]["best_step"]}}
        print(json.dumps({llm: res["held_out"][llm]["with_x"]}, default=float), flush=True)
    res["loadavg_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {args.out} and .md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
