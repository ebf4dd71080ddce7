"""Where the default benchmark's accuracy is lost: oracles, and how much of what they know a router can learn.

    python bench/quality.py --predictions     # writes the per-pair prediction file this reads
    python bench/quality_ceiling.py           # -> bench/results/quality_ceiling.{json,md}

The default simulator (trainer/simulate.py) scores an answer with a_u * correct(q, m) + the user's taste
(price, style, task bonus, conversation) + noise. On the same test pairs as bench/quality.py, this measures:
- oracles that know each user's hidden parameters: with the true per-query correctness, and with correctness
  replaced by the LLM's mean correctness on the query's task (what is knowable without per-query evidence);
- a learner that knows the generator's features and prior and learns each user's weights from that user's
  earlier comparisons (per-user Bayesian logistic regression): with the LLMs' hidden style vectors, with LLM
  taste factors learned from the training ratings (what a router could learn; also limited to the router's
  history), or with one indicator per LLM;
- an upper bound for perfect per-query correctness: GMTRouter's score plus the true correctness difference
  (relative to the task mean) on pairs whose query is from the pool the training period draws from, at the
  best scale (chosen on the test pairs, so optimistic);
- whether the query text predicts per-query correctness: models fitted on the MiniLM embeddings of the queries
  the simulator shows in training, scored on the held-back queries, against the task mean (log loss);
- how much the crowd (other users' ratings of the same query, trainer/crowd.py) knows: the share of test pairs
  it covers, and how often its sign alone orders a pair as its label does (the earlier crowd the evaluation reads,
  and the training split's).
Seconds to a minute on one core; trains only the small text models.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data import CROWD_SOURCES, held_out, load_dataset  # noqa: E402
from trainer.embed import embed_texts  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct  # noqa: E402
from trainer.simulate import SimConfig, Simulator  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SCALES = (0.5, 1.0, 2.0, 3.0)
LEARNERS = (  # (result key, style, history in answers: None for all, "serving" for what a router reads)
    ("structured_true_style", "true", None),
    ("structured_taste_factors", "factors", None),
    ("structured_taste_factors_served", "factors", "serving"),
    ("structured_llm_onehot", "onehot", None),
)


def task_means(sim: Simulator, queries: np.ndarray | None = None) -> np.ndarray:
    """[tasks, M] each LLM's mean correctness on each task's queries (all of them, or only ``queries``)."""
    d = sim.data
    rows = np.arange(len(d.queries)) if queries is None else queries
    return np.stack([d.correct[rows][d.tasks[rows] == t].mean(0) for t in range(len(d.task_names))])


def shown_queries(sim: Simulator) -> np.ndarray:
    """Indices of the queries the simulator draws from before the test period (all but the held-back ones)."""
    return np.setdiff1d(np.arange(len(sim.data.queries)), sim.unseen_queries)


def pair_table(sim: Simulator, path: Path) -> dict[str, np.ndarray]:
    """Per test pair of the predictions file: label, GMTRouter and count score differences, the true utility
    difference, the task-level one, the correctness residual difference and the query index."""
    d = sim.data
    groups = {(g.conversation_id, g.turn): g for g in sim.history if g.split == "test"}
    task_mean = task_means(sim)  # [tasks, M]
    cols: dict[str, list] = {k: [] for k in ("label", "gmt", "count", "true", "task", "resid", "query", "user",
                                             "key")}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            g = groups[(row["question_id"], row["turn"])]
            a, b = (g.llm_idx.index(d.llm_ids.index(row[k])) for k in ("llm_a", "llm_b"))
            ma, mb = g.llm_idx[a], g.llm_idx[b]
            user = sim.users[sim.user_index[g.user_id]]
            resid = d.correct[g.query_idx] - task_mean[d.tasks[g.query_idx]]  # [M]
            util = np.asarray(g.utility)
            cols["label"].append(row["label"] == 1)
            cols["gmt"].append(row["scores"]["gmtrouter"][0] - row["scores"]["gmtrouter"][1])
            cols["count"].append(row["scores"]["per_user_majority"][0] - row["scores"]["per_user_majority"][1])
            cols["true"].append(util[a] - util[b])
            cols["task"].append(util[a] - util[b] - user.quality_w * (resid[ma] - resid[mb]))
            cols["resid"].append(resid[ma] - resid[mb])
            cols["query"].append(g.query_idx)
            cols["user"].append(g.user_id)
            cols["key"].append((g.conversation_id, g.turn, ma, mb))
    keys = cols.pop("key")
    return {**{k: np.array(v) for k, v in cols.items()}, "key": keys}


def taste_factors(sim: Simulator, k: int = 3) -> np.ndarray:
    """[M, k] LLM factors learned from the training period's ratings: the top right singular vectors of the
    users x LLMs matrix of each user's shrunk mean centred rating of each LLM (columns scaled to unit std)."""
    n_m = len(sim.data.llm_ids)
    sums, counts = np.zeros((len(sim.users), n_m)), np.zeros((len(sim.users), n_m))
    for g in sim.history:
        if g.split != "train" or len(g.ratings) < 2:
            continue
        r = np.asarray(g.ratings, np.float64)
        u = sim.user_index[g.user_id]
        np.add.at(sums[u], g.llm_idx, r - r.mean())
        np.add.at(counts[u], g.llm_idx, 1.0)
    taste = sums / (counts + 1.0)
    _, _, vt = np.linalg.svd(taste - taste.mean(0), full_matrices=False)
    v = vt[:k].T
    return v / v.std(0)


def structured_learner(sim: Simulator, style: str = "true", noise: float = 0.8, turns: int | None = None
                       ) -> dict[tuple, float]:
    """A learner that knows the simulator's structure: per user, the MAP of a Bayesian logistic regression on
    the generator's features under the generator's prior, refitted before each test group from that user's
    earlier comparisons (all of them, or those of the groups within the last ``turns`` answers, like the
    router's history). Features: the LLM's task-mean correctness, normalized price, the LLM's style (the true
    style vectors; with ``style="factors"`` :func:`taste_factors`, learned from the training ratings; with
    ``style="onehot"`` one indicator per LLM), a task x LLM bonus indicator; the conversation penalty is a known
    offset; utilities are read in units of ``noise``.
    Returns {(conversation, turn, llm a, llm b): predicted utility difference a - b}."""
    d, n_t, n_m = sim.data, len(sim.data.task_names), len(sim.data.llm_ids)
    task_mean = task_means(sim)  # [tasks, M]
    llm = {"true": sim.llm_style, "factors": taste_factors(sim), "onehot": np.eye(n_m)}[style]  # [M, S]
    mu = np.concatenate([[2.0, -0.94], np.zeros(llm.shape[1] + n_t * n_m)])  # prior of [a_u, -c_u, style, bonus]
    sd = np.concatenate([[0.75, 0.94], np.full(llm.shape[1], 1.2 if style == "onehot" else 0.7),
                         np.full(n_t * n_m, 0.5)])
    out: dict[tuple, float] = {}
    by_user: dict[str, list] = {}
    for g in sim.history:
        by_user.setdefault(g.user_id, []).append(g)
    for groups in by_user.values():
        past: list[tuple[int, list, list]] = []  # per earlier group: (answers, winner - loser rows, offsets)
        w, prev = mu.copy(), {}
        for g in groups:
            wrong = d.correct[prev[g.conversation_id]] < 0.5 if g.conversation_id in prev else np.zeros(n_m, bool)
            prev[g.conversation_id] = g.query_idx
            task = int(d.tasks[g.query_idx])
            bonus = np.zeros((n_m, n_t * n_m))
            bonus[np.arange(n_m), task * n_m + np.arange(n_m)] = 1.0
            f = np.column_stack([task_mean[task], sim.price_norm, llm, bonus])  # [M, F]
            off = -0.5 * wrong  # [M]
            if g.split == "test":
                xs, offs = visible_pairs(past, turns)
                w = map_fit(np.array(xs) / noise, np.array(offs) / noise, mu, sd, w) if xs else mu.copy()
                u = f @ w + off
                out.update({(g.conversation_id, g.turn, a, b): float(u[a] - u[b])
                            for a in g.llm_idx for b in g.llm_idx})
            rated = [(a, b) for i, a in enumerate(g.llm_idx) for j, b in enumerate(g.llm_idx)
                     if g.ratings[i] > g.ratings[j]]  # winner, loser (ties say nothing here)
            past.append((len(g.llm_idx), [f[a] - f[b] for a, b in rated], [off[a] - off[b] for a, b in rated]))
    return out


def visible_pairs(past: list[tuple[int, list, list]], turns: int | None) -> tuple[list, list]:
    """The comparisons of the newest groups whose answers fit in ``turns`` (all with None)."""
    xs, offs, seen = [], [], 0
    for n, x, o in reversed(past):
        seen += n
        if turns is not None and seen > turns:
            break
        xs += x
        offs += o
    return xs, offs


def map_fit(x: np.ndarray, off: np.ndarray, mu: np.ndarray, sd: np.ndarray, w: np.ndarray, iters: int = 30,
            weights: np.ndarray | None = None) -> np.ndarray:
    """MAP of sum_p weight_p * -log sigmoid(off_p + x_p w) + |(w - mu) / sd|^2 / 2 by damped Newton steps; x [P, F]
    winner - loser features, off [P] their known offsets, ``weights`` [P] (None: all 1); w the starting point."""
    prec = 1.0 / sd ** 2
    om = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)

    def loss(v: np.ndarray) -> float:
        return float((om * np.logaddexp(0.0, -(off + x @ v))).sum() + 0.5 * (prec * (v - mu) ** 2).sum())

    cur = loss(w)
    for _ in range(iters):
        p = 0.5 * (1.0 + np.tanh(0.5 * (off + x @ w)))  # sigmoid without overflow
        grad = x.T @ (om * (p - 1.0)) + prec * (w - mu)
        hess = (x * (om * p * (1 - p))[:, None]).T @ x + np.diag(prec)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4 and loss(w - t * step) > cur:  # halve until the objective does not rise
            t /= 2
        w, prev = w - t * step, cur
        cur = loss(w)
        if prev - cur < 1e-8:
            break
    return w


def text_model(x: np.ndarray, y: np.ndarray, hidden: int, seed: int) -> torch.nn.Module:
    """Per-LLM correctness [Q, M] from query embeddings [Q, D]: a linear map (hidden=0) or a one-layer MLP."""
    torch.manual_seed(seed)
    d, m = x.shape[1], y.shape[1]
    net = torch.nn.Linear(d, m) if hidden == 0 else torch.nn.Sequential(
        torch.nn.Linear(d, hidden), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, m))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(xt), yt).backward()
        opt.step()
    return net.eval()


def text_vs_task(sim: Simulator, seed: int) -> dict:
    """Log loss of per-query correctness on the held-back queries: task mean vs models of the query text."""
    d = sim.data
    held = sim.unseen_queries
    shown = shown_queries(sim)
    emb = embed_texts(d.queries, progress=False)
    y = d.correct.astype(np.float32)
    task_mean = task_means(sim, shown)

    def log_loss(p: np.ndarray) -> float:
        p = np.clip(p, 1e-3, 1 - 1e-3)
        return float(-np.mean(y[held] * np.log(p) + (1 - y[held]) * np.log(1 - p)))

    out = {"held_back_queries": int(len(held)), "task_mean": log_loss(task_mean[d.tasks[held]])}
    for name, hidden in (("text_linear", 0), ("text_mlp", 128)):
        net = text_model(emb[shown], y[shown], hidden, seed)
        with torch.no_grad():
            out[name] = log_loss(torch.sigmoid(net(torch.from_numpy(emb[held]))).numpy())
    return out


def crowd_signal(kind_dir: Path, t: dict[str, np.ndarray], sim: Simulator) -> dict:
    """Share of test pairs with crowd evidence and the accuracy of its sign alone there, for each source
    (trainer/data.py CROWD_SOURCES): "earlier", every other user's ratings from before the pair (what serving
    and `prefstream eval` read), and "train", the training split's only. Read through ``held_out``, as the
    evaluation reads it."""
    ds = load_dataset({s: kind_dir / f"{s}.jsonl" for s in ("train", "valid", "test")},
                      kind_dir / "llm_catalog.json", progress=False)
    test = {(g.conversation_id, g.turn): g for g in ds.groups if g.split == "test"}
    out = {}
    for source in CROWD_SOURCES:
        ds.held_out_crowd = source
        crowd: dict[tuple, dict[str, float]] = {}  # (conversation, turn) -> {llm: evidence}
        diff = []
        for conv, turn, ma, mb in t["key"]:
            if (conv, turn) not in crowd:
                h = held_out(test[(conv, turn)], ds)
                crowd[(conv, turn)] = dict(zip(h.llm_ids, h.crowd.tolist()))
            ev = crowd[(conv, turn)]
            diff.append(ev[sim.data.llm_ids[ma]] - ev[sim.data.llm_ids[mb]])
        x = np.array(diff)
        covered = x != 0
        out[source] = {"pairs_with_crowd": float(covered.mean()),
                       "crowd_sign_accuracy": float(pair_correct(x[covered], t["label"][covered]).mean())}
    return out


def report(res: dict) -> str:
    o, p, x, c = res["oracles"], res["perfect_correctness"], res["text_vs_task"], res["crowd"]
    return "\n".join([
        "# Where the default benchmark's accuracy is lost", "",
        f"Command: `{res['command']}`; {res['pairs']} test pairs of `quality_default_predictions.jsonl`; load "
        f"average {res['load_avg_start']:.2f} before, {res['load_avg_end']:.2f} after.", "",
        "| scorer | accuracy |", "|---|---|",
        f"| oracle: each user's true parameters and true per-query correctness | {o['true_utility']:.4f} |",
        f"| oracle: true parameters, correctness = the LLM's task mean | {o['task_level']:.4f} |",
        f"| learner knowing the generator's features, prior and the LLMs' true style vectors (per-user Bayesian "
        f"logistic regression) | {o['structured_true_style']:.4f} |",
        f"| the same learner with 3 LLM taste factors learned from the training ratings instead of the hidden "
        f"style vectors | {o['structured_taste_factors']:.4f} |",
        f"| the same, reading only the last {res['history_turns']} answers like the router | "
        f"{o['structured_taste_factors_served']:.4f} |",
        f"| the same learner with one indicator per LLM instead of the hidden style vectors "
        f"| {o['structured_llm_onehot']:.4f} |",
        f"| GMTRouter + true correctness on queries of the training pool (best scale {p['scale']}, chosen on test) "
        f"| {p['accuracy']:.4f} |",
        f"| GMTRouter | {o['gmtrouter']:.4f} |",
        f"| per-user win count | {o['per_user_majority']:.4f} |", "",
        "The structured learners know more than a router is told: each query's task, the LLMs' task-mean "
        "correctness, the previous query's correctness (the conversation penalty) and the generator's prior; "
        "they see each user's whole past unless limited to the router's history. Each refits one user at a time from "
        "that user's comparisons only.", "",
        "| users | GMTRouter | learner with taste factors, all history | "
        f"the same, last {res['history_turns']} answers |",
        "|---|---|---|---|",
        *(f"| {seg.replace('_', ' ')} | {res['by_user_kind']['gmt'][seg]:.4f} | "
          f"{res['by_user_kind']['structured_taste_factors'][seg]:.4f} | "
          f"{res['by_user_kind']['structured_taste_factors_served'][seg]:.4f} |"
          for seg in ("users_with_training_history", "new_users")), "",
        f"Per-query correctness on the {x['held_back_queries']} held-back queries, log loss (lower is better): "
        f"task mean {x['task_mean']:.4f}, linear model of the query embedding {x['text_linear']:.4f}, "
        f"MLP {x['text_mlp']:.4f}.", "",
        f"Crowd: {100 * c['earlier']['pairs_with_crowd']:.1f} % of test pairs have other users' ratings of the "
        f"same query from before them (what serving and the evaluation read); there its sign alone orders "
        f"{100 * c['earlier']['crowd_sign_accuracy']:.1f} % of pairs as their label does. The training split's "
        f"ratings alone cover {100 * c['train']['pairs_with_crowd']:.1f} %, at "
        f"{100 * c['train']['crowd_sign_accuracy']:.1f} %.", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="simulator seed of the default benchmark")
    args = ap.parse_args()
    path = RESULTS / "quality_default_predictions.jsonl"
    if not path.exists():
        sys.exit(f"{path} is missing: run `python bench/quality.py --predictions` first")
    load_start = os.getloadavg()[0]
    torch.set_num_threads(1)
    sim = Simulator(SimConfig(seed=args.seed))
    t = pair_table(sim, path)
    for name, style, turns in LEARNERS:
        learned = structured_learner(sim, style, turns=serving_history() if turns == "serving" else turns)
        t[name] = np.array([learned[k] for k in t["key"]])
    acc = {k: float(pair_correct(t[k], t["label"]).mean())
           for k in ("true", "task", *(n for n, _, _ in LEARNERS), "gmt", "count")}
    new_user = np.array([u.startswith("new") for u in t["user"]])  # users only in the test period
    segments = {name: {seg: float(pair_correct(t[name][m], t["label"][m]).mean())
                       for seg, m in (("users_with_training_history", ~new_user), ("new_users", new_user))}
                for name in ("gmt", "structured_taste_factors", "structured_taste_factors_served")}
    seen = np.isin(t["query"], shown_queries(sim))
    best = max(((s, float(pair_correct(t["gmt"] + s * t["resid"] * seen, t["label"]).mean())) for s in SCALES),
               key=lambda sa: sa[1])
    res = {
        "command": ("python bench/quality_ceiling.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip(),
        "load_avg_start": load_start, "pairs": int(len(t["label"])), "history_turns": serving_history(),
        "oracles": {"true_utility": acc["true"], "task_level": acc["task"],
                    **{n: acc[n] for n, _, _ in LEARNERS},
                    "gmtrouter": acc["gmt"],
                    "per_user_majority": acc["count"]},
        "by_user_kind": segments,
        "perfect_correctness": {"scale": best[0], "accuracy": best[1], "pairs_on_seen_queries": float(seen.mean())},
        "text_vs_task": text_vs_task(sim, args.seed),
        "crowd": crowd_signal(ROOT / "var" / "bench" / "default", t, sim),
    }
    res["load_avg_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality_ceiling.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "quality_ceiling.md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
