"""How far below a learner that knows each query's task is GMTRouter on the topic family, and why?

    python bench/family_seeds.py --seeds 1,2       # the draws' predictions, beside their data
    python bench/topic_ceiling.py --draws 1,2      # -> bench/results/topic_ceiling.{json,md}

The second benchmark's topic users (trainer/families.py) have, for each of their 4 main tasks, a favourite LLM
(+U(1, 2)) and a disliked one (-U(1, 2)), on top of a mild taste per LLM. GMTRouter is ahead of the per-user win
count there (family_seeds.md), but how much of the topic taste does it find? On the same test pairs of each
draw this scores
- the oracle that knows each user's true parameters, with correctness replaced by the LLM's mean correctness on
  the query's task (what is knowable without per-query evidence);
- a learner that knows the generator and each query's task: per user, the MAP of a Bayesian logistic regression
  on the LLM's task-mean correctness, one indicator per LLM (prior sd 0.3) and one per task and LLM (prior sd
  0.7), refitted before each test turn from the user's comparisons (winner over loser) in the last 120 answers,
  as a router reads them; and the same learner without the task-by-LLM indicators;
- the per-user win rate of the candidate on the query's task, backed off to the user's overall win rate (one
  pseudo-game): counting, told the task;
- the same counting with the task replaced by a k-means cluster of the query's sentence embedding (k = 8, 16):
  what counting finds from the query text alone, the only thing a router is given;
- GMTRouter and the per-user win count, as the predictions file has them.
Differences are pooled over the draws with a 95 % interval from resampling whole users. Then, per draw, how well
each query's task can be told from its text: the purity and normalized mutual information of the k-means clusters
and of the trained GMTRouter's query topics (each query's largest membership; the draw's model as
bench/family_seeds.py saved it) against the true tasks, and the 5-fold accuracy of a logistic regression from the
sentence embedding to the task (a probe given the labels, which a router is not). Scoring only (about two minutes
a draw on 2 cores); a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (RESULTS, cached_embeddings, command_line, machine_facts, model_path,  # noqa: E402
                          write_results)
from bench.family_learner import QUALITY_PRIOR, predictions_path  # noqa: E402
from bench.family_seeds import family_of  # noqa: E402
from bench.quality_ceiling import map_fit, pair_table, task_means  # noqa: E402
from trainer.families import FamilyConfig, FamilySimulator  # noqa: E402
from trainer.metrics import pair_correct, user_bootstrap  # noqa: E402

FAMILY = "topic"
HISTORY = 120  # answers a router reads (settings.history_turns)
NOISE = 0.35  # the middle of the topic family's rating noise
CLUSTERS = (8, 16)
LABELS = {"task_oracle": "oracle: true parameters, task-mean correctness",
          "learner_task": "learner told each query's task: LLM taste + task x LLM taste",
          "learner_llm": "the same learner without the task x LLM taste",
          "task_count": "per-user win rate on the query's task (backed off to the user's overall rate)",
          **{f"cluster{k}_count": f"the same, task = k-means cluster of the query text (k = {k})" for k in CLUSTERS},
          "gmt": "GMTRouter", "count": "per-user win count"}


def timelines(sim: FamilySimulator) -> dict[str, list]:
    """{user: their turn groups in time order} for the topic family."""
    out: dict[str, list] = {}
    for g in sim.history:
        if family_of(g.user_id) == FAMILY:
            out.setdefault(g.user_id, []).append(g)
    return out


def wins(g) -> list[tuple[int, int]]:
    """(winner, loser) LLM index pairs of turn group ``g``."""
    return [(a, b) for i, a in enumerate(g.llm_idx) for j, b in enumerate(g.llm_idx) if g.ratings[i] > g.ratings[j]]


def task_learner(sim: FamilySimulator, topic_sd: float) -> dict[tuple, float]:
    """{(conversation, turn, llm a, llm b): predicted utility a - b} of the learner told each query's task
    (module docstring); ``topic_sd`` the prior sd of its task x LLM indicators (~0: without them)."""
    d, n_m, n_t = sim.data, len(sim.data.llm_ids), len(sim.data.task_names)
    tm = task_means(sim)  # [tasks, M]
    n_f = 1 + n_m + n_t * n_m
    mu = np.zeros(n_f)
    mu[0] = QUALITY_PRIOR[0]
    sd = np.concatenate([[QUALITY_PRIOR[1]], np.full(n_m, 0.3), np.full(n_t * n_m, topic_sd)])
    out: dict[tuple, float] = {}
    for groups in timelines(sim).values():
        rows, at, pos, w = [], [], 0, mu.copy()
        for g in groups:
            task = int(d.tasks[g.query_idx])
            f = np.zeros((n_m, n_f))  # [M, F] every LLM's features on this query
            f[:, 0], f[:, 1:1 + n_m] = tm[task], np.eye(n_m)
            f[:, 1 + n_m + task * n_m:1 + n_m + (task + 1) * n_m] = np.eye(n_m)
            if g.split == "test":
                keep = [i for i, a in enumerate(at) if pos - a <= HISTORY]
                if keep:
                    x = np.array([rows[i] for i in keep]) / (NOISE * np.sqrt(2.0))
                    w = map_fit(x, np.zeros(len(x)), mu, sd, w)
                u = f @ w
                out.update({(g.conversation_id, g.turn, a, b): float(u[a] - u[b])
                            for a in g.llm_idx for b in g.llm_idx})
            for a, b in wins(g):
                rows.append(f[a] - f[b])
                at.append(pos)
            pos += len(g.llm_idx)
    return out


def group_count(sim: FamilySimulator, group_of: np.ndarray) -> dict[tuple, float]:
    """{(conversation, turn, llm a, llm b): rate a - rate b}: each candidate's win rate among the user's earlier
    answers to queries of the same group (``group_of`` [queries]), backed off to its overall rate."""
    out: dict[tuple, float] = {}
    for groups in timelines(sim).values():
        won: dict[tuple, float] = {}
        games: dict[tuple, float] = {}
        for g in groups:
            grp = int(group_of[g.query_idx])
            if g.split == "test":
                rate = {}
                for m in g.llm_idx:
                    overall = (won.get((None, m), 0.0) + 0.5) / (games.get((None, m), 0.0) + 1.0)
                    rate[m] = (won.get((grp, m), 0.0) + overall) / (games.get((grp, m), 0.0) + 1.0)
                out.update({(g.conversation_id, g.turn, a, b): rate[a] - rate[b] for a in g.llm_idx for b in g.llm_idx})
            for i, a in enumerate(g.llm_idx):
                for j, b in enumerate(g.llm_idx):
                    if i != j:
                        r = 1.0 if g.ratings[i] > g.ratings[j] else 0.5 if g.ratings[i] == g.ratings[j] else 0.0
                        for key in ((None, a), (grp, a)):
                            won[key] = won.get(key, 0.0) + r
                            games[key] = games.get(key, 0.0) + 1.0
    return out


def purity(task: np.ndarray, group: np.ndarray) -> dict[str, float]:
    """How well the groups [queries] match the tasks [queries]: the share of queries in their group's most common
    task, and the normalized mutual information."""
    from sklearn.metrics import normalized_mutual_info_score

    share = sum(np.bincount(task[group == c]).max() for c in np.unique(group)) / len(task)
    return {"purity": float(share), "nmi": float(normalized_mutual_info_score(task, group)),
            "groups": int(len(np.unique(group)))}


@functools.lru_cache(maxsize=2)
def text_groups(queries: tuple[str, ...], tasks: tuple[int, ...]) -> tuple[np.ndarray, dict[int, np.ndarray], dict]:
    """(embeddings [Q, D], {k: k-means cluster of each query}, {"kmeans<k>": purity, "linear_probe": accuracy}) of a
    query pool. Every draw shares the source's pool, so this runs once, not once a draw."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    emb = cached_embeddings(list(queries))
    task = np.asarray(tasks)
    clusters = {k: KMeans(k, n_init=4, random_state=0).fit_predict(emb) for k in CLUSTERS}
    probe = LogisticRegression(max_iter=2000, C=10.0)
    found = {**{f"kmeans{k}": purity(task, c) for k, c in clusters.items()},
             "linear_probe": float(cross_val_score(probe, emb, task, cv=5).mean())}
    return emb, clusters, found


def model_topics(seed: int, task: np.ndarray, emb: np.ndarray) -> dict:
    """{"gmtrouter_topics": purity} of draw ``seed``'s trained model's query topics (each query's largest
    membership), when bench/family_seeds.py left that model; else {}."""
    import torch

    from trainer.checkpoint import load_checkpoint
    from trainer.config import TrainConfig

    ckpt = model_path(ROOT / "var" / "bench" / "family_seeds" / f"seed{seed}", TrainConfig(seed=seed))
    if not ckpt.exists():
        return {}
    with torch.no_grad():
        topics = load_checkpoint(ckpt).model.topics(torch.as_tensor(emb, dtype=torch.float32)).numpy()
    return {"gmtrouter_topics": purity(task, topics.argmax(1)) | {"mean_largest": float(topics.max(1).mean())}}


def score_draw(seed: int) -> dict[str, np.ndarray]:
    """{"users": [N], scorer: [N] per-pair correctness} on ``seed``'s topic test pairs."""
    sim = FamilySimulator(FamilyConfig(seed=seed))
    t = pair_table(sim, predictions_path(seed))
    m = np.array([family_of(u) == FAMILY for u in t["user"]])
    keys = [k for k, keep in zip(t["key"], m) if keep]
    fits = {"learner_task": task_learner(sim, 0.7), "learner_llm": task_learner(sim, 1e-4),
            "task_count": group_count(sim, sim.data.tasks)}
    emb, clusters, found = text_groups(tuple(sim.data.queries), tuple(int(x) for x in sim.data.tasks))
    for k, c in clusters.items():
        fits[f"cluster{k}_count"] = group_count(sim, c)
    diffs = {"task_oracle": t["task"][m], **{n: np.array([f[key] for key in keys]) for n, f in fits.items()},
             "gmt": t["gmt"][m], "count": t["count"][m]}
    out = {"users": np.array([f"s{seed}:{u}" for u in t["user"][m]]),
           **{n: pair_correct(v, t["label"][m]) for n, v in diffs.items()},
           "tasks": found | model_topics(seed, np.asarray(sim.data.tasks), emb)}
    print(f"draw {seed}: " + ", ".join(f"{n} {v.mean():.4f}" for n, v in out.items() if n not in ("users", "tasks")),
          flush=True)
    return out


def summarize(draws: dict[int, dict]) -> dict:
    users = np.concatenate([d["users"] for d in draws.values()])
    res = {"draws": sorted(draws), "pairs": int(len(users)), "users": int(len(set(users))), "scorers": {},
           "tasks": {str(s): d["tasks"] for s, d in draws.items()}}
    for n in LABELS:
        col = np.concatenate([d[n] for d in draws.values()])
        res["scorers"][n] = {"accuracy": float(col.mean()),
                             "per_draw": {str(s): float(d[n].mean()) for s, d in draws.items()},
                             "vs_count": user_bootstrap(col, np.concatenate([d["count"] for d in draws.values()]),
                                                        list(users)),
                             "vs_gmt": user_bootstrap(col, np.concatenate([d["gmt"] for d in draws.values()]),
                                                      list(users))}
    return res


def pts(b: dict) -> str:
    return f"{100 * b['diff']:+.2f} [{100 * b['low']:+.2f}, {100 * b['high']:+.2f}]"


def markdown(res: dict) -> str:
    draws = res["draws"]
    md = ["# Topic family: how much of a user's taste by topic does GMTRouter find?", "",
          f"`{res['command']}`; draws {', '.join(map(str, draws))} of the second benchmark ({res['pairs']} test pairs "
          f"of {res['users']} topic users); load average {res['load_start']:.2f} at the start, "
          f"{res['loadavg_end'][0]:.2f} at the end. Points against the per-user win count and against GMTRouter "
          "on the same pairs, 95 % interval from resampling whole users.", "",
          "| scorer | accuracy | vs count | vs GMTRouter | " + " | ".join(f"draw {s}" for s in draws) + " |",
          "|---|---|---|---|" + "---|" * len(draws)]
    for n, label in LABELS.items():
        r = res["scorers"][n]
        md.append(f"| {label} | {r['accuracy']:.4f} | {pts(r['vs_count'])} | {pts(r['vs_gmt'])} | "
                  + " | ".join(f"{r['per_draw'][str(s)]:.4f}" for s in draws) + " |")
    md += ["", "How well the query's task (14 tasks) can be told from its text: purity / normalized mutual information "
           "of each grouping against the true tasks (the trained model's topics: each query's largest membership), "
           "and the 5-fold accuracy of a logistic regression told the tasks.", "",
           "| grouping | " + " | ".join(f"draw {s}" for s in draws) + " |", "|---|" + "---|" * len(draws)]
    tasks = res["tasks"]
    for name in [f"kmeans{k}" for k in CLUSTERS] + ["gmtrouter_topics"]:
        cells = [tasks[str(s)].get(name) for s in draws]
        md.append(f"| {name} | " + " | ".join(f"{c['purity']:.3f} / {c['nmi']:.3f} ({c['groups']} used)" if c
                                              else "-" for c in cells) + " |")
    md.append("| linear probe, told the tasks | " + " | ".join(f"{tasks[str(s)]['linear_probe']:.3f}" for s in draws)
              + " |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", default="1,2", help="comma-separated draws with predictions files")
    ap.add_argument("--out", type=Path, default=RESULTS / "topic_ceiling.json")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    draws = {s: score_draw(s) for s in map(int, args.draws.split(","))}
    res = summarize(draws) | {"command": command_line(), "load_start": load0, "machine": machine_facts(),
                              "labels": LABELS}
    return write_results(args.out, res, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
