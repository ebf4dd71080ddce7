"""Which learning rate (and pull back to the serving weights) should a trainer cycle fine-tune the serving model at?
(trainer.refresh.refit_config)

    python bench/refresh_lr.py --init-model CKPT_WITHOUT_X    # -> bench/results/refresh_lr.{json,md}

bench/online.py --new-llm found that a promoted cycle learns a new LLM but serves the other LLMs' decisions
2-4 pts worse than the shipped model it replaced. This replays the same stream (the default population's users
400.., llama3-chatqa-1.5-70b registered halfway, bench/online.hold_back) into a private FalkorDB with the real
Ingestor, up to each of ``--points`` steps of 16, publishes the shipped model (trained without X by `prefstream
fit`, see bench/online.py) as the serving version, and draws a cycle's samples as trainer/refresh.py does
(RefreshTrainer.sample, ``--seeds`` as cycle seeds). From the same samples it refits the serving model at each
peak learning rate of ``--lrs``, each with its pull back to the serving weights when given (RATE:ANCHOR,
TrainConfig.anchor; trainer.refresh.refit, X's comparisons oversampled as a cycle does) and scores
every candidate, the serving model and counting on the cycle's fresh pairs, as the promotion judge does, split into
pairs with X and the others. ``vs first`` is each rate against the first of ``--lrs`` on the same pairs (one-sided
sign test of trainer.promotion.compare). A refit's cell says "promoted" when the cycle's judge
(trainer.promotion.judge, with the pairs of the LLMs the serving model never learned set apart as a cycle sets them)
would promote it over all pairs, "promoted on X" when only its route for those LLMs would. Accuracy only: the
timings are not results.

The judge's fresh pairs are drawn two ways (``--evals``): "sample", the later targets of the cycle's training
samples, each read from the history before its sample's random cut (the judge before session 39), and "served",
every fresh comparison of the sampled users with the history a router serving it reads (RefreshConfig.served_evals,
GraphStore.serving_samples). Which of the two agrees with live decisions (bench/online.py) is the question.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, command_line, machine_facts, private_stack, write_json  # noqa: E402


def stream_events(args) -> tuple[list[list], list]:
    """(the stream's batches of (user, events, group), the catalog events, X's included) as bench/online.py
    streams them with --new-llm."""
    from bench.online import hold_back, schedule
    from trainer.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(seed=args.seed, n_users=args.skip_users + args.users, n_new_users=0,
                              turns_min=args.turns, turns_max=args.turns + 10))
    catalog, _, _, order = schedule(sim, args.skip_users)
    batches, _ = hold_back(sim, order, args.new_llm, args.steps)
    return batches, catalog


def ingest(store, events: list, settings) -> None:
    """``events`` into ``store`` through the real Ingestor (catalog, then turns, then feedback), with the encoder
    the stack's ingest uses (``settings``' backend: the vector space the shipped model was trained in)."""
    from prefstream.encoder import TextEncoder
    from streams.ingest import Ingestor, RawMessage

    ing = Ingestor(store, TextEncoder.from_settings(settings), unknown_llm_grace_s=0)
    for kind, take in (("llm_registered", ing.llms), ("chat_turn", ing.turns), ("feedback", ing.feedback)):
        msgs = [RawMessage(e.to_bytes(), kind) for e in events if e.type == kind]
        for i in range(0, len(msgs), 500):
            dead = take(msgs[i:i + 500]).dead
            if dead:
                raise RuntimeError(f"ingest refused events: {dead[:3]}")


def split_correct(groups: list, scores: list, llm: str) -> tuple[np.ndarray, np.ndarray]:
    """Per fresh pair: right (1) / wrong (0) / tie (0.5) as the judge counts (trainer.promotion.pair_correct),
    and whether the pair involves ``llm``."""
    from trainer.promotion import pair_correct, pair_has

    return pair_correct(groups, scores), pair_has(groups, {llm})


def cell(c: np.ndarray, mask: np.ndarray) -> dict:
    mean = lambda x: float(x.mean()) if len(x) else None  # noqa: E731
    return {"all": mean(c), "new_llm": mean(c[mask]), "other": mean(c[~mask]), "pairs": int(len(c)),
            "new_llm_pairs": int(mask.sum())}


def one_cycle(store, model_dir: Path, args, seed: int) -> list[dict]:
    """One cycle's samples at ``seed``: counting, serving and a refit per learning rate, scored on the cycle's fresh
    pairs as each judge of ``args.evals`` draws them ("served": every fresh comparison with the history a router
    reads, RefreshConfig.served_evals; "sample": the training samples' later targets). One row per judge."""
    from dataclasses import replace

    from trainer.checkpoint import load_checkpoint
    from trainer.count_scorer import CountScorer
    from trainer.promotion import compare, judge, pair_has
    from trainer.refresh import RefreshConfig, RefreshTrainer, refit, seen_games, unlearned
    from trainer.train import llm_table, score_samples

    cfg = RefreshConfig(window_minutes=1e9, users=args.cycle_users, k=args.history, steps=args.train_steps)
    trainers = {e: RefreshTrainer(store, model_dir, replace(cfg, served_evals=e == "served")) for e in args.evals}
    first_trainer = trainers[args.evals[0]]
    ck = load_checkpoint(first_trainer.registry.path(first_trainer.registry.current()))
    serving, llms = ck.model, store.llm_catalog()
    boost = unlearned(first_trainer.recount_scorer().games, seen_games(ck), cfg.new_llm_games)
    drawn = {e: t.sample(seed) for e, t in trainers.items()}  # the same seed: the same training samples
    train = drawn[args.evals[0]][0]
    models = {"serving": serving}
    for lr, anchor in args.lrs:
        models[refit_name(lr, anchor)] = refit(train, cfg.steps, cfg.seed, serving, llms, False, boost,
                                               cfg.new_llm_share, warm_lr=lr, anchor=anchor).model
    rows = []
    for e, (_, evals, window) in drawn.items():
        groups = [g for s in evals for g in s.targets]
        c, mask = split_correct(groups, CountScorer.counted(train).score_samples(evals), args.new_llm)
        scorers, first, count_c, serving_c = {"count": cell(c, mask)}, None, c, None
        unlearned = pair_has(groups, boost) if boost else None  # the judge's slice (trainer.refresh.run_cycle)
        for name, model in models.items():
            c, _ = split_correct(groups, score_samples(model, evals, llm_table(llms, model.cfg.llm_prices)),
                                 args.new_llm)
            scorers[name] = cell(c, mask)
            if name == "serving":
                serving_c = c
            if name.startswith("lr="):
                first = c if first is None else first
                vs = compare(c, first)
                v = judge(c, count_c, serving_c, min_pairs=cfg.min_pairs, alpha=cfg.alpha, unlearned=unlearned,
                          min_new_pairs=cfg.min_new_pairs)
                scorers[name].update(vs_first_p_better=vs.p_better, vs_first_p_worse=vs.p_worse,
                                     promoted=v.route or None, reason=v.reason)
        print(f"  seed {seed} {e}: " + ", ".join(f"{n} {v['all']:.4f}" for n, v in scorers.items()), flush=True)
        rows.append({"seed": seed, "evals": e, "boosted": boost, "window": window, "scorers": scorers})
    return rows


def refit_name(lr: float, anchor: float) -> str:
    """A refit's column: "lr=R", or "lr=R,anchor=A" with a pull back to the serving weights."""
    return f"lr={lr:g}" + (f",anchor={anchor:g}" if anchor else "")


def parse_refits(spec: str) -> list[tuple[float, float]]:
    """"2e-3,2e-3:30,5e-4" -> [(lr, anchor)]: each refit's peak rate and TrainConfig.anchor (0 when not given)."""
    out = []
    for item in spec.split(","):
        lr, _, anchor = item.partition(":")
        out.append((float(lr), float(anchor or 0.0)))
    return out


def run(args) -> list[dict]:
    from graphstore import open_store
    from trainer.registry import ModelRegistry

    batches, catalog = stream_events(args)
    out = []
    with private_stack("refresh-lr") as st:
        for point in args.points:
            s = st.settings(model_dir=st.dir / f"models-{point}")
            store = open_store(s)
            store.ensure_schema()
            ingest(store, list(catalog) + [e for b in batches[:point] for _, evs, _ in b for e in evs], s)
            ModelRegistry(s.model_dir).publish(args.init_model, promote=True)
            for seed in args.seeds:
                out += [{"steps_streamed": point, **r} for r in one_cycle(store, s.model_dir, args, seed)]
            store.close()
    return out


def table(rows: list[dict], lrs: list[tuple[float, float]]) -> list[str]:
    names = ["count", "serving", *[refit_name(*r) for r in lrs]]
    md = ["| steps streamed | cycle seed | judge's pairs | fresh pairs (with X) | " + " | ".join(names) + " |",
          "|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        sc = r["scorers"]
        cells = []
        for n in names:
            x = sc[n]
            new = f"{x['new_llm']:.3f}" if x["new_llm"] is not None else "-"
            promoted = {"all pairs": ", promoted", "unlearned LLMs": ", promoted on X"}.get(x.get("promoted"), "")
            cells.append(f"{x['all']:.3f} (X {new}, other {x['other']:.3f}{promoted})")
        md.append(f"| {r['steps_streamed']} | {r['seed']} | {r['evals']} | {sc['count']['pairs']} "
                  f"({sc['count']['new_llm_pairs']}) | "
                  + " | ".join(cells) + " |")
    md.append("")
    for e in dict.fromkeys(r["evals"] for r in rows):
        mean = {n: np.mean([r["scorers"][n]["all"] for r in rows if r["evals"] == e]) for n in names}
        md.append(f"Mean accuracy over the {e} rows: " + ", ".join(f"{n} {v:.4f}" for n, v in mean.items()) + ".")
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init-model", type=Path, required=True, help="the shipped checkpoint, trained without --new-llm")
    ap.add_argument("--new-llm", default="llama3-chatqa-1.5-70b")
    ap.add_argument("--points", default="8,12,16", help="stream steps ingested before each cycle (of --steps)")
    ap.add_argument("--seeds", default="0,1", help="cycle seeds (the samples a cycle draws)")
    ap.add_argument("--lrs", default="2e-3,5e-4,2e-4",
                    help="refits: peak learning rates, each optionally :ANCHOR (TrainConfig.anchor, the pull back to "
                    "the serving weights), e.g. 2e-3,2e-3:30; the first is the reference")
    ap.add_argument("--evals", default="served,sample", help="the judge's fresh pairs: served (as routers read "
                    "the history, RefreshConfig.served_evals) and/or sample (the training samples' later targets)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skip-users", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0, help="simulator seed")
    ap.add_argument("--cycle-users", type=int, default=2000, help="samples a cycle draws (PREFSTREAM_TRAINER_USERS)")
    ap.add_argument("--history", type=int, default=120, help="visible turns (PREFSTREAM_HISTORY_TURNS)")
    ap.add_argument("--train-steps", type=int, default=400, help="PREFSTREAM_TRAINER_STEPS")
    ap.add_argument("--out", type=Path, default=RESULTS / "refresh_lr.json")
    args = ap.parse_args()
    args.points = [int(x) for x in args.points.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.lrs = parse_refits(args.lrs)
    args.evals = [x for x in args.evals.split(",") if x]
    load0 = os.getloadavg()
    rows = run(args)
    res = {"command": command_line(), "machine": machine_facts(), "rows": rows, "load_avg_start": load0,
           "load_avg_end": os.getloadavg(), "init_model": str(args.init_model), "new_llm": args.new_llm}
    write_json(args.out, res)
    md = ["# A cycle's learning rate from the serving model: accuracy on the cycle's fresh pairs\n",
          f"Command: `{res['command']}`\n",
          f"Stream of bench/online.py --new-llm {args.new_llm} ({args.users} users, {args.steps} steps, X registered "
          f"before step {args.steps // 2}); serving: `{args.init_model}` (trained without X). Each cell: accuracy on "
          "all fresh pairs (on those with X, on the others).\n", *table(rows, args.lrs), "",
          f"Load average {load0[0]:.2f} -> {res['load_avg_end'][0]:.2f} (2 cores)."]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
