"""What do torch's deterministic kernels cost training? Both settings timed in one run, alternated.

    python bench/train_determinism.py            # -> bench/results/train_determinism.{json,md}

`fit` trains with torch's deterministic kernels by default (`TrainConfig.deterministic`), so the same data and
seed give the same weights to the bit with any number of threads. This script measures what that costs on the
default benchmark (bench/quality.py's files, written if missing), on 2 torch threads, with nothing but public
hooks: it alternates short trainings (`fit` with ``deterministic`` True and False, ``--steps`` each, ``--rounds``
times, the order flipped every round so a drift of the machine's speed falls on both), then times one optimizer
step over 1,000 users (bench/quality.py's `step_time`, inside `trainer.train.deterministic_kernels`) under each
setting the same way. It also says whether the rounds' weights were equal to the bit, per setting. A benchmark,
not a test; run it alone (a few minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.quality import simulate, step_time  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.data import config_samples, load_dataset, online_samples  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.train import deterministic_kernels, fit  # noqa: E402

SETTINGS = (True, False)  # deterministic kernels on, off


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def order(rnd: int) -> tuple[bool, ...]:
    """Round ``rnd``'s order of the settings: flipped every round."""
    return SETTINGS if rnd % 2 == 0 else SETTINGS[::-1]


def time_training(ds, steps: int, rounds: int, seed: int) -> dict:
    """Wall seconds of ``fit`` per setting over ``rounds`` alternated rounds, and whether each setting's rounds
    gave the same weights to the bit."""
    train = config_samples(ds, TrainConfig(seed=seed))
    valid = online_samples(ds, "valid", turns=serving_history())
    seconds: dict[bool, list[float]] = {s: [] for s in SETTINGS}
    weights: dict[bool, list[dict]] = {s: [] for s in SETTINGS}
    for rnd in range(rounds):
        for det in order(rnd):
            cfg = TrainConfig(steps=steps, seed=seed, deterministic=det)
            t0 = time.perf_counter()
            res = fit(train, valid, cfg, progress=False, llms=ds.llms)
            seconds[det].append(time.perf_counter() - t0)
            weights[det].append({k: v.detach().clone() for k, v in res.model.state_dict().items()})
            print(f"round {rnd}: deterministic={det} {seconds[det][-1]:.1f} s", flush=True)
    return {name(s): {"seconds": seconds[s], "median_s": float(np.median(seconds[s])),
                      "rounds_equal_to_the_bit": all(same_weights(weights[s][0], w) for w in weights[s][1:])}
            for s in SETTINGS}


def time_steps(ds, rounds: int, seed: int) -> dict:
    """Seconds of one optimizer step over 1,000 users per setting (bench/quality.py's step_time, its median of
    three after a warm-up step), alternated like the trainings."""
    cfg = TrainConfig(seed=seed)
    out: dict[bool, list[float]] = {s: [] for s in SETTINGS}
    for rnd in range(rounds):
        for det in order(rnd):
            with deterministic_kernels(det):
                out[det].append(step_time(ds, cfg)["seconds_median"])
    return {name(s): {"seconds": out[s], "median_s": float(np.median(out[s]))} for s in SETTINGS}


def name(det: bool) -> str:
    return "deterministic" if det else "default_kernels"


def markdown(out: dict) -> str:
    tr, st = out["training"], out["step_1000_users"]
    ratio = lambda d: d["deterministic"]["median_s"] / d["default_kernels"]["median_s"]  # noqa: E731
    md = ["# Training with torch's deterministic kernels vs torch's default ones", "",
          f"`{out['command']}` on {out['machine']['date_utc']}, torch threads {out['machine']['torch_threads']}, "
          f"load average at start {out['machine']['loadavg_1_5_15'][0]:.2f}, at end {out['loadavg_end'][0]:.2f}. "
          f"Default benchmark, {out['steps']} training steps a run, {out['rounds']} rounds, the order flipped "
          "every round.", "",
          "| measure | deterministic (median) | default kernels (median) | ratio | runs (det / default) |",
          "|---|---|---|---|---|"]
    for label, d in ((f"fit, {out['steps']} steps (s)", tr), ("one step over 1,000 users (s)", st)):
        md.append(f"| {label} | {d['deterministic']['median_s']:.2f} | {d['default_kernels']['median_s']:.2f} | "
                  f"{ratio(d):.3f} | {', '.join(f'{x:.2f}' for x in d['deterministic']['seconds'])} / "
                  f"{', '.join(f'{x:.2f}' for x in d['default_kernels']['seconds'])} |")
    md += ["", "Weights equal to the bit across rounds: deterministic "
           f"{tr['deterministic']['rounds_equal_to_the_bit']}, default kernels "
           f"{tr['default_kernels']['rounds_equal_to_the_bit']}.", ""]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "default", help="the default benchmark")
    ap.add_argument("--steps", type=int, default=400, help="training steps of each timed fit")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of each measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_determinism.json")
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 2:
        ap.error("--steps must be >= 1 and --rounds >= 2 (one round cannot say whether runs repeat)")
    torch.set_num_threads(args.threads)
    simulate("default", args.data, args.seed)
    ds = load_dataset({s: args.data / f"{s}.jsonl" for s in ("train", "valid", "test")},
                      catalog=args.data / "llm_catalog.json")
    out: dict = {"command": command_line(), "machine": machine_facts(), "steps": args.steps, "rounds": args.rounds}
    out["training"] = time_training(ds, args.steps, args.rounds, args.seed)
    out["step_1000_users"] = time_steps(ds, args.rounds, args.seed)
    return write_results(args.out, out, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
