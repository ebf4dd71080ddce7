"""Can a learner that picks each user's noise and recency from the user's own record beat counting on noisy users?

    python bench/family_select.py          # -> bench/results/family_select.{json,md}

family_learner.md shows that with one recency setting for all users, a learner that knows the second benchmark's
generator is level with the per-user win count on noisy users (+0.05 pts at the recency drifting users need),
because nothing blind to the ratings tells a noisy user from a drifting one. The user's own ratings do: a noisy
user's record is better predicted by a learner that assumes heavy noise and keeps old comparisons, a drifting
user's by one that assumes light noise and forgets. This bench measures the best case for any router that reads
the ratings to choose per user (as bench/count_blend.py did with GMTRouter and the count):
- components, each the winner-over-loser learner of family_learner.py (the generator's prior, one indicator per
  LLM, the LLMs' task-mean correctness) reading the router's last 120 answers, with rating noise 0.35 (the plain
  families' middle) or 1.3 (the noisy family's), and no decay or decay exp(-age / (100 tau)), tau 1 or 0.5;
- the same learner reading every thumb and 1-10 score at its level (family_learner.levels_fit, with a per-user
  leniency; a pairwise user's choices say only who beat whom), noise 0.35 or 1.3, no decay or tau 1;
- each refitted before every turn of the user (all splits), so each has a prequential record: the log-likelihood
  of the user's every earlier winner-over-loser comparison, predicted before it was rated;
- two selections: Bayesian model averaging, each component weighted by its record (prior weights equal), the test
  pair predicted by the weighted probability; over the order-reading components, and over all of them.
Test pairs and the per-user win count are `prefstream eval`'s (trainer.baselines.PerUserMajority over the whole
past, trainer.metrics.pairs), so no GMTRouter training is needed. Differences pooled over the draws with a 95 %
interval from resampling whole users. A benchmark, not a test; run it alone (two draws at a time, one per core:
about 20 minutes for six).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import CATALOG, RESULTS, command_line, machine_facts  # noqa: E402
from bench.family_learner import (LENIENCY_PRIOR, QUALITY_PRIOR, Observations, levels_fit,  # noqa: E402
                                  order_fit, pooled, preamble, vs_count_table, window)
from bench.family_seeds import family_of  # noqa: E402
from bench.quality_ceiling import task_means  # noqa: E402
from trainer.baselines import PerUserMajority  # noqa: E402
from trainer.data import load_dataset, online_samples  # noqa: E402
from trainer.families import FamilyConfig, FamilySimulator, write_benchmark  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct, pairs  # noqa: E402

FAMILIES = ("noisy", "drift")
NOISES = (0.35, 1.3)
TAUS = (None, 1.0, 0.5)
#: (what the component reads, noise, tau): who beat whom in each turn, or every thumb and score at its level
COMPONENTS = (*(("order", n, t) for n, t in itertools.product(NOISES, TAUS)),
              *(("levels", n, t) for n, t in itertools.product(NOISES, TAUS[:2])))
#: the selections: model averaging over the components that read the order only, and over all of them
SELECTIONS = {"selection, order": [c for c, comp in enumerate(COMPONENTS) if comp[0] == "order"],
              "selection, order and levels": list(range(len(COMPONENTS)))}


def name(reads: str, noise: float, tau: float | None) -> str:
    return f"{reads}, noise {noise:g}, " + ("no decay" if tau is None else f"tau {tau:g}")


def count_table(seed: int, data: Path) -> dict[tuple, tuple[float, bool]]:
    """{(conversation, turn, llm a, llm b): (count's score difference a - b, a rated higher)} for every test pair
    of the noisy and drifting users, as `prefstream eval` scores the per-user win count."""
    out_dir = data / f"seed{seed}"
    write_benchmark("families", out_dir, seed)
    ds = load_dataset({s: out_dir / f"{s}.jsonl" for s in ("train", "valid", "test")}, CATALOG, progress=False)
    index = {m: i for i, m in enumerate(FamilySimulator(FamilyConfig(seed=seed)).data.llm_ids)}
    samples = online_samples(ds, "test", history=10**9, embed=False)
    scores = PerUserMajority().fit(ds).score(samples)
    table = {}
    for g, sc in zip((g for s in samples for g in s.targets), scores):
        if family_of(g.user_id) in FAMILIES:
            for a, b in pairs(g):
                key = (g.conversation_id, g.turn, index[g.llm_ids[a]], index[g.llm_ids[b]])
                table[key] = (float(sc[a] - sc[b]), bool(g.ratings[a] > g.ratings[b]))
    return table


def refit(obs: Observations, mu: np.ndarray, sd: np.ndarray, w: np.ndarray, noise: float, tau: float | None,
          history: int) -> np.ndarray:
    """The component's MAP on the ratings of the last ``history`` answers (warm-started at ``w``): who beat whom
    (``obs`` pairwise; mu, sd, w without the leniency) or each rating's level (mu, sd, w end with it)."""
    keep, om = window(obs, tau, history)
    if not keep.any():
        return mu.copy()
    fit = levels_fit if obs.kind != "pairwise" else order_fit
    return fit(obs, mu, sd, w, noise, keep, om)


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def select_user(sim: FamilySimulator, groups: list, task_mean: np.ndarray, history: int) -> dict[tuple, np.ndarray]:
    """{test key: [C + S] each component's probability that a beats b, then each selection's} for one user."""
    d, n_m = sim.data, len(sim.data.llm_ids)
    user = sim.users[sim.user_index[groups[0].user_id]]
    mu = np.concatenate([[QUALITY_PRIOR[0]], np.zeros(n_m), [LENIENCY_PRIOR[0]]])  # [weight, taste, leniency]
    sd = np.concatenate([[QUALITY_PRIOR[1]], np.ones(n_m), [LENIENCY_PRIOR[1]]])
    obs = {"order": Observations("pairwise"), "levels": Observations(user.feedback)}
    ws = [mu.copy() for _ in COMPONENTS]
    record = np.zeros(len(COMPONENTS))  # [C] prequential log-likelihood of the user's comparisons so far
    scale = np.array([noise * math.sqrt(2.0) for _, noise, _ in COMPONENTS])  # [C]
    out = {}
    for g in groups:
        f = np.column_stack([task_mean[int(d.tasks[g.query_idx])], np.eye(n_m)])  # [M, 1 + M]
        for c, (reads, noise, tau) in enumerate(COMPONENTS):
            ob = obs[reads]
            if ob.empty:
                continue
            if ob.kind == "pairwise":  # a pairwise user's levels say who beat whom: the order component's fit
                ws[c] = (ws[COMPONENTS.index(("order", noise, tau))] if reads == "levels" else
                         np.append(refit(ob, mu[:-1], sd[:-1], ws[c][:-1], noise, tau, history), mu[-1]))
            else:
                ws[c] = refit(ob, mu, sd, ws[c], noise, tau, history)
        u = np.stack([f @ w[:-1] for w in ws])  # [C, M] each component's utilities
        if g.split == "test":
            mixes = [np.exp(record[i] - record[i].max()) for i in SELECTIONS.values()]
            for a, b in itertools.permutations(g.llm_idx, 2):
                p = 1.0 / (1.0 + np.exp(-(u[:, a] - u[:, b]) / scale))  # [C]
                sel = [m @ p[i] / m.sum() for m, i in zip(mixes, SELECTIONS.values())]
                out[(g.conversation_id, g.turn, a, b)] = np.append(p, sel)
        for i, a in enumerate(g.llm_idx):  # the record: each winner-over-loser comparison, predicted before it
            for j, b in enumerate(g.llm_idx):
                if g.ratings[i] > g.ratings[j]:
                    record += log_sigmoid((u[:, a] - u[:, b]) / scale)
        for ob in obs.values():
            ob.add(g, f)
    return out


def score_draw(seed: int, data: Path, history: int) -> dict[str, dict[str, np.ndarray]]:
    """{family: {"users": [N], scorer: [N] per-pair correctness}} on the draw's noisy and drifting test pairs."""
    sim = FamilySimulator(FamilyConfig(seed=seed))
    counts = count_table(seed, data)
    task_mean = task_means(sim)
    by_user: dict[str, list] = {}
    for g in sim.history:
        if family_of(g.user_id) in FAMILIES:
            by_user.setdefault(g.user_id, []).append(g)
    probs: dict[tuple, np.ndarray] = {}
    for groups in by_user.values():
        probs.update(select_user(sim, groups, task_mean, history))
    user_of = {(g.conversation_id, g.turn): g.user_id for g in sim.history}
    keys = list(counts)
    users = np.array([user_of[k[:2]] for k in keys])
    fam = np.array([family_of(u) for u in users])
    label = np.array([counts[k][1] for k in keys])
    out = {}
    for family in FAMILIES:
        m = fam == family
        ks = [k for k, keep in zip(keys, m) if keep]
        diffs = {"count": np.array([counts[k][0] for k in ks])}
        p = np.stack([probs[k] for k in ks])  # [N, C + S]
        for c, comp in enumerate(COMPONENTS):
            diffs[name(*comp)] = p[:, c] - 0.5
        for s, sel in enumerate(SELECTIONS):
            diffs[sel] = p[:, len(COMPONENTS) + s] - 0.5
        out[family] = {"users": np.array([f"s{seed}:{u}" for u in users[m]]),
                       **{k: pair_correct(v, label[m]) for k, v in diffs.items()}}
        print(f"draw {seed} {family}: " + ", ".join(f"{k} {v.mean():.4f}" for k, v in out[family].items()
                                                   if k != "users"), flush=True)
    return out


def report(res: dict) -> str:
    fams = res["families"]
    lines = ["# Noisy and drifting users: a learner choosing each user's noise and recency from their record", "",
             preamble(res, "`prefstream eval`'s test pairs") + f" History {res['history_turns']} answers. Points "
             "against the per-user win count on the same pairs, 95 % interval from resampling whole users.", "",
             *vs_count_table(fams, FAMILIES, [*((name(*c), name(*c)) for c in COMPONENTS),
                                              *((k, f"**{k}** (model averaging by each user's record)")
                                                for k in SELECTIONS),
                                              ("count", "per-user win count")], "learner")]
    lines += ["", "| family | pairs | users |", "|---|---|---|",
              *(f"| {f} | {r['pairs']} | {r['users']} |" for f, r in fams.items()), "",
              "Per draw (accuracy):", "", "| family | learner | " + " | ".join(f"draw {s}" for s in res["seeds"])
              + " |", "|---|---|" + "---|" * len(res["seeds"])]
    for f in FAMILIES:
        for k in (*SELECTIONS, "count"):
            lines.append(f"| {f} | {k} | " + " | ".join(f"{a:.4f}" for a in fams[f]["per_draw"][k]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4,5", help="draws of the families benchmark, comma-separated")
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "family_seeds",
                    help="where each draw's files are (written there when missing)")
    ap.add_argument("--workers", type=int, default=2, help="draws scored at once, one torch thread each")
    ap.add_argument("--out", type=Path, default=RESULTS / "family_select.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    load = os.getloadavg()[0]
    history = serving_history()
    with multiprocessing.get_context("spawn").Pool(args.workers, initializer=torch.set_num_threads,
                                                   initargs=(1,)) as pool:  # small fits: a draw per core
        draws = pool.starmap(score_draw, [(s, args.data, history) for s in seeds])
    res = {"command": command_line(), "machine": machine_facts(), "load_avg_start": load, "seeds": seeds,
           "history_turns": history, "families": pooled(draws), "load_avg_end": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
