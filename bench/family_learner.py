"""How far ahead of the per-user win count can any learner be on the families with plain per-LLM taste?

    python bench/quality.py --predictions      # draw 0's predictions (bench/results/quality_families_predictions.jsonl)
    python bench/family_seeds.py               # draws 1-5, each with its predictions beside its data
    python bench/family_learner.py             # -> bench/results/family_learner.{json,md,png}

The second benchmark's noisy users (trainer/families.py) have a fixed taste per LLM drawn N(0, 1), a weight on
real correctness, and ratings with heavy logistic noise; sparse users have the same taste with normal noise but
only 6-15 turns. GMTRouter trails or ties the per-user win count on them (family_seeds.md). This asks whether any
learner could be clearly ahead there: on the same test pairs of every draw it scores
- the oracle that knows each user's true taste and weight, with correctness replaced by the LLM's mean
  correctness on the query's task (what is knowable without per-query evidence);
- a learner that knows the generator: per user, the MAP of a Bayesian logistic regression on one indicator per LLM
  and the LLM's task-mean correctness, under the generator's own prior (taste N(0, 1), weight LogNormal(log 1.5,
  0.3)), with the user's own noise scale (optimistic: a router is not told it) or the family's middle one,
  refitted before each test turn from all of that user's earlier comparisons (winner over loser in a turn);
- the same learner reading every rating's level: thumbs and 1-10 scores by their exact likelihood, with a
  per-user leniency (what the sign guarantee keeps GMTRouter from reading);
- GMTRouter and the per-user win count as the predictions file has them.
Drifting users have the same plain taste, replaced halfway. Nothing blind to the ratings tells them from noisy
users, so one recency setting must serve both: the winner-over-loser learner reading the router's history with
GMTRouter's recency weight at several scales traces what each setting gives the two families (the PNG).
Differences are pooled over the draws with a 95 % interval from resampling whole users. Scoring only: the
learners are refitted one user at a time (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts  # noqa: E402
from bench.family_seeds import family_of  # noqa: E402
from bench.quality_ceiling import map_fit, pair_table, task_means  # noqa: E402
from trainer.families import FamilyConfig, FamilySimulator  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct, user_bootstrap  # noqa: E402

PLAIN = ("noisy", "sparse")  # families whose taste is one number per LLM
FRONTIER = ("noisy", "drift")  # the families one recency setting must serve together
TAUS = (4.0, 2.0, 1.0, 0.5, 0.25)  # recency scales of the frontier, in 100 answers
FRONTIER_PNG = "family_learner.png"
FAMILY_NOISE = {"noisy": 1.3, "sparse": 0.35}  # the middle of each family's noise range (trainer/families.py)
QUALITY_PRIOR = (1.5 * math.exp(0.3 ** 2 / 2), 1.5 * math.exp(0.3 ** 2 / 2) * math.sqrt(math.exp(0.3 ** 2) - 1))
LENIENCY_PRIOR = (0.8, 0.4)  # the threshold of thumbs and scores (trainer/families.py)
EDGE = 30.0  # stands for an infinite bound of a score's interval (sigmoid(30) is 1 in float64 to 1e-13)
#: (result key, the user's own noise or the family's, every rating's level or only who beat whom in a turn)
LEARNERS = (("learner_own_noise", True, False), ("learner_family_noise", False, False),
            ("learner_levels", True, True))
SCORERS = ("task_oracle", *(k for k, _, _ in LEARNERS), "gmt", "count")
LABELS = {"task_oracle": "oracle: true taste and weight, task-mean correctness",
          "learner_own_noise": "learner knowing the generator and the user's noise, winner over loser",
          "learner_family_noise": "the same learner with the family's middle noise",
          "learner_levels": "the same learner (own noise) reading each rating's level: thumbs and 1-10 "
                            "scores by their exact likelihood",
          "gmt": "GMTRouter", "count": "per-user win count"}


def predictions_path(seed: int) -> Path:
    return (RESULTS / "quality_families_predictions.jsonl" if seed == 0
            else ROOT / "var" / "bench" / "family_seeds" / f"seed{seed}" / "predictions.jsonl")


def plain_learner(sim: FamilySimulator, family: str, own_noise: bool, levels: bool, tau: float | None = None,
                  history: int | None = None) -> dict[tuple, float]:
    """{(conversation, turn, llm a, llm b): predicted utility difference a - b} for ``family``'s test turns, from
    a per-user MAP refitted before each test turn on that user's earlier ratings: each turn's winner-over-loser
    comparisons (:func:`map_fit`; a comparison's two noisy utilities differ by noise * (difference of two
    standard logistics), read as one logistic of scale noise * sqrt(2), the same variance), or with ``levels``
    every thumb or score by its exact likelihood (:func:`levels_fit`; a pairwise user's choices say no more than
    who beat whom). Winner over
    loser only: ``tau`` weighs a comparison ``age`` answers old by exp(-age / (100 tau)) as GMTRouter's posterior
    does, and ``history`` keeps the comparisons of the last that many answers, as a router reads them."""
    d, n_m = sim.data, len(sim.data.llm_ids)
    task_mean = task_means(sim)  # [tasks, M]
    mu = np.concatenate([[QUALITY_PRIOR[0]], np.zeros(n_m), [LENIENCY_PRIOR[0]]])  # [weight, taste, leniency]
    sd = np.concatenate([[QUALITY_PRIOR[1]], np.ones(n_m), [LENIENCY_PRIOR[1]]])
    out: dict[tuple, float] = {}
    by_user: dict[str, list] = {}
    for g in sim.history:
        if family_of(g.user_id) == family:
            by_user.setdefault(g.user_id, []).append(g)
    for uid, groups in by_user.items():
        user = sim.users[sim.user_index[uid]]
        noise = user.noise if own_noise else FAMILY_NOISE[family]
        obs = Observations(user.feedback if levels else "pairwise")
        w = mu.copy()
        for g in groups:
            f = np.column_stack([task_mean[int(d.tasks[g.query_idx])], np.eye(n_m)])  # [M, 1 + M]
            if g.split == "test":
                if obs.kind != "pairwise" and not obs.empty:  # thumbs or scores read by their level
                    w = levels_fit(obs, mu, sd, w, noise)
                elif not obs.empty:
                    w = np.append(order_fit(obs, mu[:-1], sd[:-1], w[:-1], noise, *window(obs, tau, history)), mu[-1])
                u = f @ w[:-1]
                out.update({(g.conversation_id, g.turn, a, b): float(u[a] - u[b])
                            for a in g.llm_idx for b in g.llm_idx})
            obs.add(g, f)
    return out


def window(obs: "Observations", tau: float | None, history: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(keep [P], weights [kept] or None): the user's ratings of the last ``history`` answers (all if None) and
    their recency weights exp(-age / (100 tau)), age in answers since the rating (None: no decay)."""
    age = obs.position - np.array(obs.at, np.float64) - 1  # [P] answers since the rating
    keep = age < (history if history is not None else np.inf)
    return keep, (np.exp(-age[keep] / (100.0 * tau)) if tau is not None else None)


def order_fit(obs: "Observations", mu: np.ndarray, sd: np.ndarray, w: np.ndarray, noise: float, keep: np.ndarray,
              weights: np.ndarray | None) -> np.ndarray:
    """The MAP of the kept winner-over-loser rows (``obs`` pairwise; mu, sd, w without the leniency), each read as
    one logistic of scale noise * sqrt(2) (:func:`plain_learner`), from ``w``."""
    x = np.array(obs.rows)[keep] / (noise * math.sqrt(2.0))
    return map_fit(x, np.zeros(len(x)), mu, sd, w, weights=weights)


class Observations:
    """One user's ratings so far, as the rows a learner fits: winner - loser feature rows for ``"pairwise"``
    (every kind's who-beat-whom), answer rows with thumbs up / down for ``"thumbs"``, answer rows with the
    interval of noisy utility minus leniency that the 1-10 score admits for ``"score"``."""

    def __init__(self, kind: str):
        self.kind = kind
        self.rows: list[np.ndarray] = []
        self.targets: list = []
        self.at: list[int] = []  # [rows] the user's answers before each row's turn
        self.position = 0  # the user's answers so far

    @property
    def empty(self) -> bool:
        return not self.rows

    def add(self, g, f: np.ndarray) -> None:
        """Add turn ``g``'s ratings; f [M, F] every LLM's features on its query."""
        n = len(self.rows)
        if self.kind == "pairwise":
            self.rows += [f[a] - f[b] for i, a in enumerate(g.llm_idx) for j, b in enumerate(g.llm_idx)
                          if g.ratings[i] > g.ratings[j]]
        elif self.kind == "thumbs":
            self.rows += [f[a] for a in g.llm_idx]
            self.targets += [float(r) for r in g.ratings]
        else:  # score s = clip(round(1 + 9 sigmoid(x - leniency)), 1, 10): x - leniency lies in an interval
            for a, score in zip(g.llm_idx, g.scores):
                lo, hi = ((score - 1.5) / 9, (score - 0.5) / 9)
                self.rows.append(f[a])
                self.targets.append((math.log(lo / (1 - lo)) if lo > 0 else -EDGE,
                                     math.log(hi / (1 - hi)) if hi < 1 else EDGE))
        self.at += [self.position] * (len(self.rows) - n)
        self.position += len(g.llm_idx)


def levels_fit(obs: Observations, mu: np.ndarray, sd: np.ndarray, w: np.ndarray, noise: float,
               keep: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """MAP of [weight, taste, leniency] under the Gaussian prior (mu, sd) and the exact likelihood of the user's
    thumbs (up with probability sigmoid((u - leniency) / noise)) or scores (their interval by the logistic CDF).
    L-BFGS from ``w``. ``keep`` [N] (bool): the ratings read (all if None); ``weights``: theirs (all 1 if None)."""
    keep = np.ones(len(obs.rows), bool) if keep is None else keep
    x = torch.from_numpy(np.array(obs.rows)[keep])  # [N, 1 + M]
    m, s = torch.from_numpy(mu), torch.from_numpy(sd)
    v = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(np.array(obs.targets, np.float64)[keep], dtype=torch.float64)
    om = torch.ones(len(x), dtype=torch.float64) if weights is None else torch.from_numpy(np.asarray(weights, float))
    logsig = torch.nn.functional.logsigmoid

    def nll() -> torch.Tensor:
        z = x @ v[:-1]  # [N]
        if obs.kind == "thumbs":
            z = (z - v[-1]) / noise
            like = (om * (t * logsig(z) + (1 - t) * logsig(-z))).sum()
        else:  # log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)), a > b
            a = (t[:, 1] - (z - v[-1])) / noise
            b = (t[:, 0] - (z - v[-1])) / noise
            like = (om * (logsig(a) + logsig(-b) + torch.log1p(-torch.exp(b - a).clamp(max=1 - 1e-12)))).sum()
        return -like + 0.5 * (((v - m) / s) ** 2).sum()

    opt = torch.optim.LBFGS([v], lr=1.0, max_iter=60, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    opt.step(closure)
    return v.detach().numpy().copy()


def frontier_settings(history: int) -> list[tuple[str, float | None, int | None]]:
    """(key, tau, history) of the winner-over-loser learner (own noise) traced over recency on noisy and drift
    users: the whole past unweighted, then the router's history with no, slow and ever faster decay."""
    return [("all, no decay", None, None), (f"{history}, no decay", None, history),
            *((f"{history}, tau {tau:g}", tau, history) for tau in TAUS)]


def score_draw(seed: int, history: int) -> dict[str, dict[str, np.ndarray]]:
    """{family: {"users": [N], scorer: [N] per-pair correctness}} on ``seed``'s test pairs of the plain-taste
    families (every learner) and of the drifting one (the recency frontier only)."""
    sim = FamilySimulator(FamilyConfig(seed=seed))
    t = pair_table(sim, predictions_path(seed))
    fam = np.array([family_of(u) for u in t["user"]])
    out = {}
    for family in (*PLAIN, "drift"):
        m = fam == family
        keys = [k for k, keep in zip(t["key"], m) if keep]
        diffs = {"task_oracle": t["task"][m], "gmt": t["gmt"][m], "count": t["count"][m]}
        fits: dict[tuple, dict] = {}  # (own noise, levels, tau, history) -> the learner's predictions

        def learned(*setting) -> np.ndarray:
            if setting not in fits:
                fits[setting] = plain_learner(sim, family, *setting)
            return np.array([fits[setting][k] for k in keys])

        if family in PLAIN:
            for name, own, levels in LEARNERS:
                diffs[name] = learned(own, levels, None, None)
        if family in FRONTIER:  # its whole-past, no-decay setting is learner_own_noise, fitted once
            for name, tau, hist in frontier_settings(history):
                diffs[f"frontier: {name}"] = learned(True, False, tau, hist)
        out[family] = {"users": np.array([f"s{seed}:{u}" for u in t["user"][m]]),
                       **{k: pair_correct(v, t["label"][m]) for k, v in diffs.items()}}
        print(f"draw {seed} {family}: " + ", ".join(f"{k} {v.mean():.4f}" for k, v in out[family].items()
                                                   if k != "users"), flush=True)
    return out


def pooled(draws: list[dict]) -> dict:
    """Per family: each scorer's accuracy over the pooled pairs, and each one's difference with the count."""
    res = {}
    for family in draws[0]:
        names = [k for k in draws[0][family] if k != "users"]
        cat = {k: np.concatenate([dr[family][k] for dr in draws]) for k in ("users", *names)}
        res[family] = {"pairs": int(len(cat["users"])), "users": int(len(set(cat["users"]))),
                       "accuracy": {k: float(cat[k].mean()) for k in names},
                       "vs_count": {k: user_bootstrap(cat[k], cat["count"], cat["users"])
                                    for k in names if k != "count"},
                       "per_draw": {k: [float(dr[family][k].mean()) for dr in draws] for k in names}}
    return res


def pts(b: dict | None) -> str:
    return "" if b is None else f"{100 * b['diff']:+.2f} [{100 * b['low']:+.2f}, {100 * b['high']:+.2f}]"


def preamble(res: dict, pairs: str) -> str:
    """The command, the draws, whose ``pairs`` were scored and the load average before and after."""
    return (f"`{res['command']}`; draws {', '.join(map(str, res['seeds']))} of the second benchmark ({pairs}); "
            f"load average {res['load_avg_start']:.2f} at the start, {res['load_avg_end']:.2f} at the end.")


def vs_count_table(fams: dict, families: Sequence[str], rows: list[tuple[str, str]], first: str) -> list[str]:
    """A markdown table: per row (key, label), each family's pooled accuracy and points against the count."""
    lines = [f"| {first} | " + " | ".join(f"{f} accuracy | {f} vs count" for f in families) + " |",
             "|---|" + "---|---|" * len(families)]
    for k, label in rows:
        cells = [c for f in families for c in (f"{fams[f]['accuracy'][k]:.4f}", pts(fams[f]["vs_count"].get(k)))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def report(res: dict) -> str:
    fams = res["families"]
    lines = ["# Plain-taste families: how far ahead of counting can a learner be?", "",
             preamble(res, "test pairs of each draw's predictions file") + " Differences in points against the "
             "per-user win count on the same pairs, 95 % interval from resampling whole users.", "",
             *vs_count_table(fams, PLAIN, [(k, LABELS[k]) for k in SCORERS], "scorer")]
    lines += ["", f"Recency frontier: the winner-over-loser learner (own noise) on noisy and drifting users, "
              f"reading the last {res['history_turns']} answers like the router, with comparisons weighted "
              "exp(-age / (100 tau)), age in answers (GMTRouter's trained tau is about 1). One setting serves "
              f"both families, since nothing blind to the ratings tells them apart (`{FRONTIER_PNG}`).", "",
              *vs_count_table(fams, FRONTIER, [(k, LABELS.get(k, k.removeprefix("frontier: "))) for k in
                                               [k for k in fams["noisy"]["accuracy"] if k.startswith("frontier: ")]
                                               + ["gmt", "count"]], "learner setting")]
    lines += ["", "| family | pairs | users |", "|---|---|---|",
              *(f"| {f} | {r['pairs']} | {r['users']} |" for f, r in fams.items()), "",
              "Per draw (accuracy):", "", "| family | scorer | " + " | ".join(f"draw {s}" for s in res["seeds"]) + " |",
              "|---|---|" + "---|" * len(res["seeds"])]
    for f in PLAIN:
        for k in SCORERS:
            lines.append(f"| {f} | {LABELS[k]} | " + " | ".join(f"{a:.4f}" for a in fams[f]["per_draw"][k]) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """Noisy against drift, points vs the count: the learner's recency settings as a line, GMTRouter a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy, drift = (res["families"][f]["vs_count"] for f in FRONTIER)
    keys = [k for k in noisy if k.startswith("frontier: ")]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.plot([100 * noisy[k]["diff"] for k in keys], [100 * drift[k]["diff"] for k in keys], "o-",
            label="learner knowing the generator")
    for k in keys:
        ax.annotate(k.removeprefix("frontier: "), (100 * noisy[k]["diff"], 100 * drift[k]["diff"]), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")
    ax.plot([100 * noisy["gmt"]["diff"]], [100 * drift["gmt"]["diff"]], "*", markersize=12, label="GMTRouter")
    ax.axvline(0, color="grey", lw=0.8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("noisy users: points vs per-user win count")
    ax.set_ylabel("drifting users: points vs per-user win count")
    ax.set_title(f"One recency for both families (draws {', '.join(map(str, res['seeds']))} pooled)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4,5", help="draws of the families benchmark, comma-separated")
    ap.add_argument("--out", type=Path, default=RESULTS / "family_learner.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    missing = [str(predictions_path(s)) for s in seeds if not predictions_path(s).exists()]
    if missing:
        sys.exit(f"missing predictions: {', '.join(missing)} (see this script's --help)")
    load = os.getloadavg()[0]
    history = serving_history()
    draws = [score_draw(s, history) for s in seeds]
    res = {"command": command_line(), "machine": machine_facts(), "load_avg_start": load, "seeds": seeds,
           "history_turns": history, "families": pooled(draws), "load_avg_end": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(res))
    plot(res, args.out.with_suffix(".png"))
    print(report(res))


if __name__ == "__main__":
    main()
