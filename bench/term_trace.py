"""Which of GMTRouter's terms decide its test comparisons, family by family, and would other weights of them win?

    python bench/term_trace.py                  # draws 0 and 1 -> bench/results/term_trace.{json,md}
    python bench/term_trace.py --draws 0        # one draw (a screen)
    python bench/term_trace.py --draws 0 1 2 3 4 5 --out bench/results/term_trace_levels.json   # session 47's defaults

GMTRouter's score of a candidate is a sum of parts (GMTRouter.forward keeps them as "terms"): the global head, the
Bayesian posterior over the user's comparisons, the memory of similar queries' ratings, the per-LLM rating counts,
the previous turn of the conversation, the crowd (other users' ratings of the same query) and, on by default since
session 47, the levels (the user's ratings of the candidate at their own level). The per-user weights
of all but the head are rating-blind, so one set of weights serves users with noisy and with clean ratings alike.
bench/family_learner.md found GMTRouter behind the per-user win count on noisy users, where a learner that knows
the generator and reads the comparisons with the same recency is level with it. This bench traces where the
distance comes from. On each test pair of the second benchmark (trainer/families.py) it takes the difference of
each term between the two answers, then reports per family:
- the accuracy of the head alone, of the whole score, and of the whole score without each term;
- each term's mean absolute difference (how much it moves a decision) and how often its sign is right;
- the accuracy of the terms refitted per family (logistic regression on the term differences, no intercept,
  two folds of users: each fold is scored by weights fitted on the other), alone and with the per-user win
  count's difference as one more input. This is an oracle that knows each user's family; it says whether the
  terms carry what the family needs and only their weights are wrong, not a router;
- the same refit once over every family's pairs (two folds of users): what other weights would give a router that
  cannot tell the families apart, still fitted on the test pairs (an oracle of the weighting, not of the family);
- the same refit once per feedback kind (pairwise, thumbs, score; each user gives one kind in this benchmark), over
  every family: what weights per kind would give. A router knows the kind of each feedback event (prefstream.events
  Signal), though the graph keeps only the rating; the benchmark files do not carry it, so it is read from the
  generator here;
- the trained per-user evidence weights (what the gates read from the HGT state and the history length), averaged
  per family: which users the trained model already tells apart.
The draws are trained as bench/family_seeds.py does (and reuse its files and models when it left them), with
`prefstream eval`'s defaults and no ablations. A benchmark, not a test; run it alone (each draw it trains takes
minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import CATALOG, RESULTS, command_line, machine_facts, model_path, write_json  # noqa: E402
from bench.family_seeds import family_of, run_seed  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.data import iter_online_samples, load_dataset  # noqa: E402
from trainer.families import make_simulator  # noqa: E402
from trainer.history import serving_history  # noqa: E402
from trainer.metrics import pair_correct, pairs, user_bootstrap  # noqa: E402
from trainer.model import GMTRouter  # noqa: E402
from trainer.train import make_batch  # noqa: E402

TERMS = ("head", "posterior", "memory", "counts", "conversation", "crowd", "levels")
WEIGHTED = ("memory", "counts", "conversation", "crowd", "levels")  # GMTRouter.evidence_weights' columns, in order
COUNT = "per_user_majority"


@torch.no_grad()
def term_scores(model: GMTRouter, samples, chunk: int = 256):
    """Yield (group, {term: [K] scores}, [K, n_terms] evidence weights) for every target group, the terms and the
    user's evidence weights (GMTRouter.evidence_weights, one row per candidate) as the model's forward keeps them."""
    buf = []
    for s in [*samples, None]:
        if s is not None:
            buf.append(s)
        if not buf or (s is not None and len(buf) < chunk):
            continue
        b = make_batch([x.visible for x in buf], [x.targets for x in buf], model.llm_emb, model.cfg.reverse_edges)
        kept: dict = {}
        model(b, keep=kept)
        cuts = np.cumsum(b.counts)[:-1]
        parts = {k: np.split(v.numpy().astype(np.float64), cuts) for k, v in kept["terms"].items()}
        weights = np.split(kept["evidence_weights"].numpy().astype(np.float64), cuts)
        for i, g in enumerate(x for y in buf for x in y.targets):
            yield g, {k: v[i] for k, v in parts.items()}, weights[i]
        buf = []


def trace_draw(seed: int, data: Path, history: int) -> dict[str, np.ndarray]:
    """Columns over the draw's test pairs: users, family, label, each term's difference (a - b) and the count's
    difference, in `prefstream eval --predictions` order (checked against that file, line by line)."""
    _, preds = run_seed(seed, data, history, [], force=False)
    model = load_checkpoint(model_path(data, TrainConfig(seed=seed))).model
    kinds = {u.user_id: u.feedback for u in make_simulator("families", seed).users}  # the draw's users, regenerated
    ds = load_dataset({s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}, CATALOG, progress=False)
    rows = defaultdict(list)
    with open(preds) as f:
        for g, terms, weights in term_scores(model, iter_online_samples(ds, "test", turns=history)):
            for a, b in pairs(g):
                p = json.loads(next(f))
                assert (p["user"], p["llm_a"], p["llm_b"]) == (g.user_id, g.llm_ids[a], g.llm_ids[b]), p
                total = sum(v[a] - v[b] for v in terms.values())
                ga, gb = p["scores"]["gmtrouter"]
                assert abs(total - (ga - gb)) < 1e-3 * (1 + abs(total)), (total, ga - gb)
                rows["users"].append(f"s{seed}:{g.user_id}")
                rows["family"].append(family_of(g.user_id))
                rows["kind"].append(kinds[g.user_id])
                rows["label"].append(p["label"] == 1)
                for k in TERMS:
                    rows[k].append(terms[k][a] - terms[k][b] if k in terms else 0.0)
                ca, cb = p["scores"][COUNT]
                rows[COUNT].append(ca - cb)
                for k, name in enumerate(WEIGHTED):  # the user's weights (rating-blind: the same for a and b)
                    rows[f"weight {name}"].append(weights[a, k] if k < weights.shape[1] else 0.0)
    return {k: np.array(v) for k, v in rows.items()}


def refit(x: np.ndarray, y: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correctness [N] of the two-fold cross-fitted logistic regression, its weights fitted on all rows)."""
    fold = np.array([zlib.crc32(u.encode()) % 2 for u in users])  # [N] the user's fold, the same every run
    pred = np.zeros(len(y))
    scale = x.std(0) + 1e-9
    for k in (0, 1):
        lr = LogisticRegression(fit_intercept=False, C=10.0, max_iter=1000).fit(x[fold != k] / scale, y[fold != k])
        pred[fold == k] = (x[fold == k] / scale) @ lr.coef_[0]
    full = LogisticRegression(fit_intercept=False, C=10.0, max_iter=1000).fit(x / scale, y)
    return pair_correct(pred, y), full.coef_[0] / scale


def analyse(cols: dict[str, np.ndarray]) -> dict:
    """Per family (and "all"): the accuracies, the term magnitudes and the refits (see the module docstring)."""
    present = [k for k in TERMS if np.any(cols[k] != 0)]
    # one refit for every family at once: what reweighting the terms gives without knowing the family
    x_all = np.stack([cols[k] for k in present], axis=1)
    once, _ = refit(x_all, cols["label"], cols["users"])
    per_kind, kind_weights = np.zeros(len(once)), {}  # one refit per feedback kind, over every family
    for kind in sorted(set(cols["kind"])):
        k = cols["kind"] == kind
        per_kind[k], w = refit(x_all[k], cols["label"][k], cols["users"][k])
        kind_weights[kind] = dict(zip(present, map(float, w)))
    out = {}
    for fam in [*sorted(set(cols["family"])), "all"]:
        m = cols["family"] == fam if fam != "all" else np.ones(len(cols["label"]), bool)
        y, users = cols["label"][m], cols["users"][m]
        d = {k: cols[k][m] for k in (*present, COUNT)}
        total = sum(d[k] for k in present)
        count = pair_correct(d[COUNT], y)
        scored = {"GMTRouter": pair_correct(total, y), "head alone": pair_correct(d["head"], y)}
        for k in present[1:]:
            scored[f"without {k}"] = pair_correct(total - d[k], y)
        x = np.stack([d[k] for k in present], axis=1)
        scored["terms refitted for the family"], w = refit(x, y, users)
        scored["terms and count refitted for the family"], wc = refit(np.c_[x, d[COUNT]], y, users)
        scored["terms refitted once for all families"] = once[m]
        scored["terms refitted per feedback kind"] = per_kind[m]
        out[fam] = {
            "pairs": int(m.sum()), "users": int(len(set(users))), "count": float(count.mean()),
            "accuracy": {k: float(v.mean()) for k, v in scored.items()},
            "vs_count": {k: user_bootstrap(v, count, users) for k, v in scored.items()},
            "magnitude": {k: float(np.abs(d[k]).mean()) for k in present},
            "sign_right": {k: float(pair_correct(d[k], y)[d[k] != 0].mean()) if np.any(d[k] != 0) else None
                           for k in present},
            "refit_weights": dict(zip(present, map(float, w))),
            "refit_weights_with_count": dict(zip([*present, COUNT], map(float, wc))),
            "evidence_weights": {k: float(cols[f"weight {k}"][m].mean()) for k in WEIGHTED if f"weight {k}" in cols},
            "kinds": {kind: int(np.sum(cols["kind"][m] == kind)) for kind in kind_weights},
        }
    out["all"]["kind_refit_weights"] = kind_weights
    return out


def markdown(res: dict) -> str:
    fams = res["families"]
    names = list(fams)
    lines = ["# GMTRouter's terms, family by family", "",
             f"`{res['command']}`; draws {res['draws']}; load average {res['machine']['loadavg_1_5_15'][0]:.2f} at "
             f"the start, {res['loadavg_end'][0]:.2f} at the end. Accuracy on the test pairs, then points against "
             "the per-user win count with a 95 % interval from resampling whole users. The refits are oracles "
             "fitted on the test pairs; those \"for the family\" also know each user's family (module docstring).", "",
             "| scorer | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines.append("| per-user win count | " + " | ".join(f"{fams[f]['count']:.4f}" for f in names) + " |")
    for k in fams["all"]["accuracy"]:
        cells = []
        for f in names:
            v = fams[f]["vs_count"][k]
            cells.append(f"{fams[f]['accuracy'][k]:.4f} ({100 * v['diff']:+.2f} [{100 * v['low']:+.2f}, "
                         f"{100 * v['high']:+.2f}])")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "How much each term moves a decision (mean |difference| between the two answers) and how often "
              "its sign alone is right (pairs where it is not 0):", "",
              "| term | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in fams["all"]["magnitude"]:
        cells = [f"{fams[f]['magnitude'][k]:.3f} / {fams[f]['sign_right'][k] or float('nan'):.3f}" for f in names]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "Refitted weights per family (fitted on all of the family's pairs; 1 would keep the term as "
              "trained):", "", "| term | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in fams["all"]["refit_weights"]:
        lines.append(f"| {k} | " + " | ".join(f"{fams[f]['refit_weights'][k]:.2f}" for f in names) + " |")
    if "evidence_weights" in fams["all"]:
        lines += ["", "The trained per-user evidence weights (GMTRouter.evidence_weights, 4 softplus(shared + gate(HGT "
                  "state, history length)), rating-blind), mean over the family's test pairs:", "",
                  "| weight | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in fams["all"]["evidence_weights"]:
            lines.append(f"| {k} | " + " | ".join(f"{fams[f]['evidence_weights'][k]:.2f}" for f in names) + " |")
    kw = fams["all"].get("kind_refit_weights", {})
    if kw:
        lines += ["", "Refitted weights per feedback kind (fitted on all of the kind's pairs, every family):", "",
                  "| term | " + " | ".join(kw) + " |", "|---|" + "---|" * len(kw)]
        for k in fams["all"]["refit_weights"]:
            lines.append(f"| {k} | " + " | ".join(f"{kw[kind][k]:.2f}" for kind in kw) + " |")
    lines += ["", "| family | pairs | users | pairs by feedback kind |", "|---|---|---|---|"]
    lines += [f"| {f} | {fams[f]['pairs']} | {fams[f]['users']} | "
              + ", ".join(f"{k} {n}" for k, n in fams[f].get("kinds", {}).items()) + " |" for f in names]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "family_seeds",
                    help="bench/family_seeds.py's draws (seed<N> folders); missing ones are drawn and trained")
    ap.add_argument("--out", type=Path, default=RESULTS / "term_trace.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    res = {"command": command_line(), "machine": machine_facts(), "draws": args.draws}
    history = serving_history()
    per = [trace_draw(s, args.data / f"seed{s}", history) for s in args.draws]
    cols = {k: np.concatenate([p[k] for p in per]) for k in per[0]}
    res["families"] = analyse(cols)
    res["loadavg_end"] = list(os.getloadavg())
    write_json(args.out, res)
    md = markdown(res)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
