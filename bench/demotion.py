"""When is a serving model behind counting demoted: by each cycle's test alone, or by the live watch?

    python bench/demotion.py --model CKPT     # -> bench/results/demotion.{json,md,png}

The periodic trainer can demote a serving model two ways: a cycle's judge (trainer/promotion.py: a sign test on that
cycle's fresh pairs only, at level alpha, every cycle) and the live watch (trainer/watch.py: one sequential test over
every comparison since the model began serving). Offline, on the default simulator's test split drawn with seeds
0, 1 and 2 (the shipped model ``--model`` was trained on seed 0's other users; seeds 1 and 2 are other
populations, where bench/results/level_shift*.md found it behind the per-user count), the served model's per-pair
correctness (level offsets for the LLMs it never learned, as the trainer's recounts serve them: bench/level_shift.py)
and the per-user count's are replayed in random orders (``--replays``; also once in time order):

- cycle: every ``--cycle-every`` pairs, the sign test on those pairs (the cycle's fresh side), demoting when worse;
- watch: every ``--look-every`` pairs, the evidence over every pair so far (also with its mixture's widest part only);
- both: whichever demotes first;
- both, cycle if behind overall: what the trainer does: both, but a cycle demotes only while the model is behind
  over all pairs so far.

Two more populations exchange the model's and the count's results of each pair with chance s, which multiplies the
model's lead by 1 - 2s: seed 0 with s = 0.4 (a model a little ahead, which no rule should demote) and the last seed
with s = 0.5 (level by construction, so every demotion there is a false one, though a harmless one). Per rule: the
share of replays demoted within the first N pairs, and the accuracy served (the model's until demoted, the count's
after). Run it alone.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402

RULES = ("cycle", "watch", "watch, width 1/2 only", "both", "both, cycle if behind overall")
TRAINER = RULES[-1]  # what the periodic trainer does


def correctness(model: Path, seed: int, work: Path, criterion: str = "likelihood") -> tuple[np.ndarray, np.ndarray]:
    """[P] per-pair correctness of the served model (offsets for its unlearned LLMs) and of the per-user count on
    seed ``seed``'s test split, in time order (cached under ``work``)."""
    cache = work / "demotion" / f"seed{seed}-{model.parent.name}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["model"], z["count"]
    from bench.level_shift import scored_test, served_offsets
    from trainer.promotion import pair_correct

    groups, scores, count, fit, _ = scored_test(model, seed, work)
    served = served_offsets(groups, scores, fit, criterion) if fit else scores
    out = pair_correct(groups, served), pair_correct(groups, count)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, model=out[0], count=out[1])
    return out


def serving(model: np.ndarray, count: np.ndarray, rule: str, cycle_every: int, look_every: int,
            alpha: float) -> np.ndarray:
    """[P] whether the model (else counting) serves each pair under ``rule``, decided from the pairs before it:

    - "cycle": at every ``cycle_every`` pairs a sign test on those pairs demotes a model that is worse;
    - "watch": at every ``look_every`` pairs the sequential evidence over all pairs so far demotes it
      (trainer.watch.log_evidence; "width 1/2 only": its mixture's widest part alone);
    - "both": whichever comes first;
    - "both, cycle if behind overall": as both, but a cycle demotes only while the model is behind counting over all
      pairs so far (the watch's tally: more discordant pairs lost than won): what the trainer does.
    """
    from trainer.promotion import compare
    from trainer.watch import WIDTHS, log_evidence

    n, bar = len(model), math.log(1.0 / alpha)
    widths = (0.5,) if rule.endswith("width 1/2 only") else WIDTHS
    wins, losses = np.cumsum(model > count), np.cumsum(model < count)
    out = np.ones(n, bool)
    for t in sorted(set(range(look_every, n, look_every)) | set(range(cycle_every, n, cycle_every))):
        if t % look_every == 0 and rule != "cycle" and log_evidence(losses[t - 1], wins[t - 1], widths) >= bar:
            out[t:] = False
            break
        if (t % cycle_every == 0 and not rule.startswith("watch") and (rule != TRAINER or losses[t - 1] > wins[t - 1])
                and compare(model[t - cycle_every:t], count[t - cycle_every:t]).p_worse < alpha):
            out[t:] = False
            break
    return out


def replay(model: np.ndarray, count: np.ndarray, args, swap: float = 0.0) -> dict:
    """Per rule, in each replay: the pairs seen when counting first served (None: never), the share of pairs the
    model served and the accuracy served."""
    rng = np.random.default_rng(args.seed)
    out = {r: {"demoted_at": [], "model_share": [], "served": []} for r in RULES}
    orders = [np.arange(len(model))] + [rng.permutation(len(model)) for _ in range(args.replays)]
    for order in orders:
        a, b = model[order], count[order]
        if swap:  # each pair's two results exchanged with chance ``swap``: the gap times 1 - 2 swap (1/2: level)
            flip = rng.random(len(a)) < swap
            a, b = np.where(flip, b, a), np.where(flip, a, b)
        for r in RULES:
            path = serving(a, b, r, args.cycle_every, args.look_every, args.alpha)
            out[r]["demoted_at"].append(None if path.all() else int(np.argmin(path)))
            out[r]["model_share"].append(float(path.mean()))
            out[r]["served"].append(float(np.where(path, a, b).mean()))
    lead = (1.0 - 2.0 * swap) * float(model.mean() - count.mean())  # expected over the exchanges
    return {"pairs": int(len(model)), "model": float(model.mean()), "count": float(count.mean()), "lead": lead,
            "in_time_order": {r: {k: v[k][0] for k in v} for r, v in out.items()},
            "rules": {r: {"demoted_at": v["demoted_at"][1:], "model_share": float(np.mean(v["model_share"][1:])),
                          "served": float(np.mean(v["served"][1:]))} for r, v in out.items()}}


def share_by(at: list, n: int) -> float:
    return float(np.mean([t is not None and t <= n for t in at]))


def run(args) -> dict:
    facts = machine_facts()  # the load average before the replays
    pops = {}
    for seed in args.seeds:
        model, count = correctness(args.model, seed, args.work)
        pops[f"seed {seed}"] = replay(model, count, args)
        if seed == args.seeds[0]:  # the model ahead by a fifth of its lead
            pops[f"seed {seed}, swapped 0.4"] = replay(model, count, args, swap=0.4)
        if seed == args.seeds[-1]:  # level
            pops[f"seed {seed}, swapped 0.5"] = replay(model, count, args, swap=0.5)
    return {"command": command_line(), "machine": facts, "model": str(args.model), "alpha": args.alpha,
            "cycle_every": args.cycle_every, "look_every": args.look_every, "replays": args.replays,
            "checkpoints": args.within, "populations": pops}


def markdown(res: dict) -> str:
    cols = [f"demoted by {n:,}" for n in res["checkpoints"]]
    md = ["# Demotion: each cycle's test, or the live watch", "",
          f"Command: `{res['command']}`. {res['replays']} random orders of each population's test pairs (and once in "
          f"time order). cycle: a sign test every {res['cycle_every']} pairs on those pairs; watch: the sequential "
          f"evidence over every pair so far, looked at every {res['look_every']} pairs (trainer/watch.py; \"width 1/2 "
          "only\": its mixture's widest part alone); both: whichever demotes first; \"both, cycle if behind "
          "overall\": what the trainer does (a cycle demotes only while the watch's tally has the model behind); "
          f"alpha {res['alpha']}. Served: the model's accuracy until demoted, the per-user count's after. "
          "\"swapped s\": each pair's two results exchanged with chance s (the model's lead times 1 - 2s; the model "
          f"and count columns are before the exchange). Load average {res['machine']['loadavg_1_5_15'][0]:.2f} at "
          f"the start, {res['loadavg_end'][0]:.2f} at the end.", "",
          "| population | pairs | model | count | model lead (pts) | rule | " + " | ".join(cols)
          + " | median pairs to demotion | model served | served | in time order: demoted at, served |",
          "|---|---|---|---|---|---|" + "---|" * len(cols) + "---|---|---|---|"]
    for name, p in res["populations"].items():
        for r, v in p["rules"].items():
            at = [t for t in v["demoted_at"] if t is not None]
            median = f"{int(np.median(at)):,}" if len(at) > len(v["demoted_at"]) / 2 else "-"
            ordered = p["in_time_order"][r]
            md.append(f"| {name} | {p['pairs']:,} | {p['model']:.4f} | {p['count']:.4f} | {100 * p['lead']:+.2f} | "
                      f"{r} | " + " | ".join(f"{share_by(v['demoted_at'], n):.2f}" for n in res["checkpoints"])
                      + f" | {median} | {v['model_share']:.2f} | {v['served']:.4f} | "
                        f"{ordered['demoted_at'] or 'never'}, {ordered['served']:.4f} |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the shipped checkpoint")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the populations' simulator seeds")
    ap.add_argument("--cycle-every", type=int, default=500, help="pairs per cycle (its fresh side)")
    ap.add_argument("--look-every", type=int, default=100, help="pairs between two looks of the watch (a recount)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--within", type=int, nargs="+", default=[2000, 5000, 10000, 100000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "demotion.json")
    args = ap.parse_args()
    return write_results(args.out, run(args), markdown)


if __name__ == "__main__":
    raise SystemExit(main())
