"""Why does a model trained without an LLM lose to counting on that LLM's pairs, and would one number fix it?

    python bench/new_llm_offset.py       # -> bench/results/new_llm_offset.{json,md}

bench/new_llm.py found the model trained without llama3-chatqa-1.5-70b 1.9 pts behind the per-user win count on the
test pairs that involve it, and live (bench/online.py --new-llm) the shipped model served that LLM's decisions about
4 pts worse than counting until a cycle learned it. An LLM the model never trained on is scored from its description
only, so its whole level may be off. This measures that level error and what correcting it online would give:
- the share of X's test pairs X wins, and the share where the model prefers X (a level error shows as a gap);
- prequential offset: before each test pair, in time order, the MAP of one number b_X added to X's score, fitted on
  every earlier test pair with X (all users' feedback seen so far, as a live router would have it) under the
  Bradley-Terry likelihood sigmoid(s_X - s_other + b_X) with a N(0, ``--prior-sd``^2) prior; refitted every
  ``--refit-every`` pairs;
- the per-user win count (whole past) on the same pairs;
- the offsets the periodic trainer's recounts would serve (recount_offsets): its schedule, and the fit always, or
  trainer.calibration.calibrate's choice by fresh pairs right or by their likelihood.
For each held-out LLM the defaults are trained once on bench/new_llm.py's filtered files (X's answers removed from
train and valid; the test file unchanged; cached beside them), or read from ``--model X=CKPT``. Differences in
points with a 95 % interval from resampling whole users. About 5 minutes per LLM to train on 2 cores; run it alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, write_results  # noqa: E402
from bench.new_llm import DATA, HELD_OUT, filtered_copy, fit_on, load, pts, scored  # noqa: E402

RECOUNT_RULES = ("always", "accuracy", "likelihood")  # recount_offsets: no choice, then calibrate's criteria


def x_pairs(groups: list, scores: list, count: list, llm: str) -> dict[str, np.ndarray]:
    """X's test pairs in time order: whether X won, the model's and counting's score of X minus the other's, the
    user and the time stamp."""
    from trainer.metrics import pairs

    rows = []
    for g, s, c in zip(groups, scores, count):
        for a, b in pairs(g):
            ids = (g.llm_ids[a], g.llm_ids[b])
            if llm not in ids:
                continue
            x, o = (a, b) if ids[0] == llm else (b, a)
            rows.append((g.timestamp, float(g.ratings[x] > g.ratings[o]), float(s[x] - s[o]), float(c[x] - c[o]),
                         g.user_id))
    rows.sort(key=lambda r: r[0])
    return {"ts": np.array([r[0] for r in rows]), "won": np.array([r[1] for r in rows]),
            "model": np.array([r[2] for r in rows]), "count": np.array([r[3] for r in rows]),
            "users": np.array([r[4] for r in rows])}


def map_offset(d: np.ndarray, won: np.ndarray, prior_sd: float, b: float = 0.0) -> float:
    """X's offset by trainer.calibration.map_offsets (what a cycle fits): ``d`` [P] X's score minus the other's,
    ``won`` [P] 1 where X won."""
    from trainer.calibration import map_offsets

    sign = np.where(won > 0, 1.0, -1.0)  # X's offset counts for the winner when X won, against it when X lost
    return float(map_offsets(sign[:, None], sign * d, prior_sd, b=np.array([b]))[0])


def prequential_offsets(t: dict, prior_sd: float, every: int) -> np.ndarray:
    """[P] b_X in force at each pair: fitted on the pairs strictly earlier in time, refitted every ``every`` pairs."""
    out, b, fitted = np.zeros(len(t["won"])), 0.0, 0
    for i in range(len(out)):
        if i - fitted >= every:
            seen = t["ts"] < t["ts"][i]
            b, fitted = map_offset(t["model"][seen], t["won"][seen], prior_sd, b), i
        out[i] = b
    return out


def recount_schedule(groups: list, scores: list, llms: set, criterion: str) -> tuple[np.ndarray, list[dict]]:
    """The offsets for ``llms`` the periodic trainer's recounts would serve: a fit whenever their pairs make a
    recount due (trainer.calibration.recount_due), each on every earlier comparison with them split in time as
    RefreshTrainer.recalibrate splits them (trainer.refresh.prequential_cutoff, the newest ``eval_fraction``
    fresh), chosen by trainer.calibration.calibrate with ``criterion`` ("always": the refit on all of them, no
    choice). (the time stamps [F+1] from which each applies, strictly after: -inf first; the offsets [F+1]: {}
    first)."""
    from trainer.calibration import calibrate, fit_offsets, offset_pairs, recount_due
    from trainer.refresh import RefreshConfig, prequential_cutoff

    xs = sorted((i for i, g in enumerate(groups) if any(m in llms for m in g.llm_ids)),
                key=lambda i: groups[i].timestamp)
    n_pairs = np.cumsum([len(offset_pairs([groups[i]], [scores[i]], llms)[3]) for i in xs])
    at, chosen, current, last = [-np.inf], [{}], {}, 0.0
    for j, i in enumerate(xs):
        if not recount_due(n_pairs[j], last):
            continue
        g, s = [groups[k] for k in xs[: j + 1]], [scores[k] for k in xs[: j + 1]]
        cut = prequential_cutoff([x.timestamp for x in g], RefreshConfig().eval_fraction)
        old = [k for k, x in enumerate(g) if x.timestamp < cut]
        new = [k for k, x in enumerate(g) if x.timestamp >= cut]
        current = (fit_offsets(g, s, llms) if criterion == "always" else
                   calibrate([g[k] for k in old], [s[k] for k in old], [g[k] for k in new], [s[k] for k in new],
                             llms, current, criterion)["offsets"])
        at.append(groups[i].timestamp)
        chosen.append(current)
        last = n_pairs[j]
    return np.array(at, float), chosen


def in_force(schedule: tuple[np.ndarray, list[dict]], ts: np.ndarray) -> list[dict]:
    """The offsets of a recount_schedule in force at each time stamp of ``ts``."""
    at, chosen = schedule
    return [chosen[k] for k in np.searchsorted(at, ts, side="left") - 1]


def recount_offsets(groups: list, scores: list, llm: str, ts: np.ndarray, criterion: str) -> np.ndarray:
    """[P] X's offset in force at each pair stamped ``ts`` [P] under recount_schedule for X alone."""
    return np.array([o.get(llm, 0.0) for o in in_force(recount_schedule(groups, scores, {llm}, criterion), ts)])


def correct(diff: np.ndarray, won: np.ndarray) -> np.ndarray:
    return np.where(diff == 0, 0.5, ((diff > 0) == (won > 0)).astype(float))


def one_llm(llm: str, model_file: Path | None, work: Path, args) -> dict:
    import torch

    from trainer.baselines import PerUserMajority
    from trainer.checkpoint import load_checkpoint, save_checkpoint
    from trainer.config import TrainConfig
    from trainer.data import online_samples
    from trainer.metrics import user_bootstrap

    data = filtered_copy(DATA, work / llm, llm)
    ds = load(data)
    cached = model_file or data / "model_without.pt"
    if not cached.exists():
        res, _ = fit_on(ds, TrainConfig(), progress=True)
        save_checkpoint(res.model, cached, version=f"without-{llm}")
    model = load_checkpoint(cached).model
    torch.set_num_threads(2)
    groups, scores = scored(model, ds)
    count = PerUserMajority().fit(ds).score(online_samples(ds, "test", history=10**9, embed=False))
    t = x_pairs(groups, scores, count, llm)
    offsets = prequential_offsets(t, args.prior_sd, args.refit_every)
    final = map_offset(t["model"], t["won"], args.prior_sd)
    acc = {"model": correct(t["model"], t["won"]), "model + online offset": correct(t["model"] + offsets, t["won"]),
           "count": correct(t["count"], t["won"])}
    for rule in RECOUNT_RULES:  # the trainer's recount schedule and choice (trainer/calibration.py)
        acc[f"recount: {rule}"] = correct(t["model"] + recount_offsets(groups, scores, llm, t["ts"], rule), t["won"])
    vs = lambda a, b: {k: 100 * v for k, v in user_bootstrap(acc[a], acc[b], t["users"]).items()  # noqa: E731
                       if k in ("diff", "low", "high")}
    half = len(t["won"]) // 2
    rules = {f"recount {r} - always": vs(f"recount: {r}", "recount: always") for r in RECOUNT_RULES[1:]}
    return {"model_file": str(cached), "pairs": int(len(t["won"])), "x_wins": float(t["won"].mean()),
            "model_prefers_x": float((t["model"] > 0).mean()),
            "offset_all_pairs": final, "offset_trace": offsets[:: max(1, len(offsets) // 50)].tolist(),
            "accuracy": {k: float(v.mean()) for k, v in acc.items()},
            "accuracy_second_half": {k: float(v[half:].mean()) for k, v in acc.items()},
            "vs": {"offset - model": vs("model + online offset", "model"),
                   "offset - count": vs("model + online offset", "count"), "model - count": vs("model", "count"),
                   **rules}}


def markdown(res: dict) -> str:
    md = ["# A new LLM's level: the model's error on it, and one online offset", "",
          f"Command: `{res['command']}`. Default benchmark, each LLM's answers removed from the train and valid files "
          f"(bench/new_llm.py), the test file unchanged; X's test pairs in time order. The offset is refitted every "
          f"{res['refit_every']} pairs on the earlier ones (prior sd {res['prior_sd']:g}). Load average "
          f"{res['machine']['loadavg_1_5_15'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end.", "",
          "| held-out LLM X | pairs | X wins | model prefers X | offset on all pairs | model | model + online offset "
          "| per-user count | offset - model | offset - count | model - count |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for llm, r in res["held_out"].items():
        a, vs = r["accuracy"], r["vs"]
        md.append(f"| {llm} | {r['pairs']} | {r['x_wins']:.3f} | {r['model_prefers_x']:.3f} | "
                  f"{r['offset_all_pairs']:+.2f} | {a['model']:.4f} | {a['model + online offset']:.4f} | "
                  f"{a['count']:.4f} | {pts(vs['offset - model'])} | {pts(vs['offset - count'])} | "
                  f"{pts(vs['model - count'])} |")
    md += ["", "The periodic trainer's recounts (first fit at X's 50th pair, again at each 1.5 times as many; the "
           "newest fifth fresh; trainer.calibration.calibrate chooses the fit, the offsets in force or none):", "",
           "| held-out LLM X | " + " | ".join(f"recount, {r}" for r in RECOUNT_RULES) + " | "
           + " | ".join(f"{r} - always" for r in RECOUNT_RULES[1:]) + " |",
           "|---|" + "---|" * (2 * len(RECOUNT_RULES) - 1)]
    md += [f"| {llm} | " + " | ".join(f"{r['accuracy'][f'recount: {k}']:.4f}" for k in RECOUNT_RULES) + " | "
           + " | ".join(pts(r["vs"][f"recount {k} - always"]) for k in RECOUNT_RULES[1:]) + " |"
           for llm, r in res["held_out"].items()]
    md += ["", "Second half of X's pairs (the offset has seen the first): " + "; ".join(
        f"{llm}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["accuracy_second_half"].items())
        for llm, r in res["held_out"].items()), ""]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llms", default=",".join(HELD_OUT), help="held-out LLMs (comma-separated)")
    ap.add_argument("--model", action="append", default=[], metavar="X=CKPT",
                    help="a checkpoint trained without X (default: trained here and cached)")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "new_llm")
    ap.add_argument("--prior-sd", type=float, default=1.0)
    ap.add_argument("--refit-every", type=int, default=25)
    ap.add_argument("--out", type=Path, default=RESULTS / "new_llm_offset.json")
    args = ap.parse_args()
    given = dict(m.split("=", 1) for m in args.model)
    res = {"command": command_line(), "machine": machine_facts(), "prior_sd": args.prior_sd,
           "refit_every": args.refit_every, "held_out": {}}
    for llm in args.llms.split(","):
        res["held_out"][llm] = one_llm(llm, Path(given[llm]) if llm in given else None, args.work, args)
        print(llm, res["held_out"][llm]["accuracy"], flush=True)
    return write_results(args.out, res, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
