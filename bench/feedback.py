"""Does a user's own feedback move the decision the way they asked? Live, through the real stack, and offline.

    python bench/feedback.py        # -> bench/results/feedback.{json,md}

Live (issue 20's experiment, automated): a local stack (`prefstream up`: broker, graph, Ray router workers,
Faust ingest) serving a GMTRouter trained on the default benchmark. For every ordered pair (A, B) of the 9
catalog LLMs and each feedback kind (pairwise "A beat B"; thumbs up A / down B; score 9 for A and 3 for B), a
fresh user gets two turns on one real query, answered by A and B. The router is asked about a similar query
(the same text behind a short preface) until both turns are in the decision's ``turn_ids``; then the feedback
is published; the margin score(A) - score(B) is read until it changes, and once more 2 s later. A trial goes
the right way if that final margin is above the one before the feedback.

Offline: on the same trained model, for test users of the default benchmark with their real histories, a new
comparison of every ordered pair on a test query is added unrated, then rated "A beat B": the margin for that
query must not fall (the property tests/trainer/test_monotone.py checks on small models).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import command_line, llm_events, machine_facts, pct, write_json  # noqa: E402
from bench.quality import simulate  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402

KINDS = ("pairwise", "thumbs", "score")
PREFACE = "Quick question for you: "
EPS = 1e-6
# a wave routes dozens of new texts at once; this measures feedback, not latency, so no request is shed
DEADLINE_MS = 120_000


def train_model(data: Path, steps: int, seed: int):
    """The default benchmark's GMTRouter (the one bench/quality.py trained, when it left one)."""
    from bench.common import trained_model
    from trainer.data import load_dataset
    from trainer.history import serving_history

    simulate("default", data, seed)
    ds = load_dataset({s: data / f"{s}.jsonl" for s in ("train", "valid", "test")}, data / "llm_catalog.json",
                      progress=False)
    return trained_model(data, ds, TrainConfig(steps=steps, seed=seed), serving_history()), ds


def offline_check(model, ds, samples: int, seed: int) -> dict:
    """Margins before / after a new rated comparison, on real histories of the benchmark's test users."""
    from graphstore.schema import UserSubgraph
    from trainer.data import online_samples
    from trainer.graph import Request, build_batch, llm_table

    rng = np.random.default_rng(seed)
    test = online_samples(ds, "test", turns=80)
    llms = sorted(ds.llms)
    table = llm_table(ds.llms, model.cfg.llm_prices)
    shifts, wrong = [], 0
    for i in rng.choice(len(test), samples, replace=False):
        s = test[i]
        q = s.targets[0].query_emb
        for a, b in itertools.permutations(llms, 2):
            margins = []
            for ra, rb in ((np.nan, np.nan), (1.0, 0.0)):
                v = s.visible
                sub = UserSubgraph(v.user_id, v.turn_ids + ["x:a", "x:b"], v.conversation_ids + ["x", "x"],
                                   v.llm_ids + [a, b], v.query_keys + ["xq", "xq"],
                                   np.append(v.turn_index, [0, 0]), np.append(v.timestamps, [10**13, 10**13]),
                                   np.concatenate([v.query_emb, np.stack([q, q])]),
                                   np.append(v.rating, [ra, rb]).astype(np.float32), np.append(v.prev, [-1, -1]))
                req = Request(0, q, np.stack([table[a], table[b]]), [a, b])
                with torch.no_grad():
                    sc = model(build_batch([sub], [req], table)).numpy()
                margins.append(float(sc[0] - sc[1]))
            shifts.append(margins[1] - margins[0])
            wrong += margins[1] < margins[0] - 1e-4
    return {"checks": len(shifts), "wrong_way": int(wrong), "median_margin_shift": float(np.median(shifts)),
            "min_margin_shift": float(np.min(shifts))}


def live(model, llms_info: dict, steps_note: str, seed: int, wave: int, users_per_pair: int) -> dict:
    from prefstream.config import Settings
    from prefstream.procs import free_port, free_port_span
    from stack.services import RAY_PORT_SPAN
    from stack.local import Stack
    from streams.client import PrefstreamClient
    from trainer.registry import ModelRegistry
    from trainer.simulate import LLMRouterData

    tmp = Path(tempfile.mkdtemp(prefix="prefstream-feedback-"))
    s = Settings(broker_port=free_port(), graph_port=free_port(), ray_port=free_port_span(RAY_PORT_SPAN),
                 run_dir=tmp / "run", model_dir=tmp / "models", trainer_every_minutes=1e6,
                 trainer_after_feedback=10**9, graph_name="feedback")
    version = ModelRegistry(s.model_dir).publish(model, promote=True, llm_catalog=llms_info)
    data = LLMRouterData.load()
    rng = np.random.default_rng(seed)
    llms = list(data.llm_ids)
    trials = [{"a": a, "b": b, "kind": k, "user": f"fb-{k}-{i}-{n}", "query": data.queries[int(rng.integers(len(data.queries)))]}
              for n in range(users_per_pair) for k in KINDS
              for i, (a, b) in enumerate(itertools.permutations(llms, 2))]
    stack = Stack(s)
    stack.up(apps=True, log=lambda m: print(f"  {m}", flush=True))
    try:
        with PrefstreamClient(stack.s) as client:
            for e in llm_events():
                client.publish(e)
            client.flush()
            time.sleep(2.0)
            for w in range(0, len(trials), wave):
                run_wave(client, trials[w:w + wave])
                done = sum("after" in t for t in trials)
                print(f"trials {min(w + wave, len(trials))}/{len(trials)} ({done} complete)", flush=True)
    finally:
        stack.down(log=lambda m: None)
    ok = [t for t in trials if "after" in t]
    shift = [t["after"] - t["before"] for t in ok]
    return {"model_version": version, "model": steps_note, "trials": len(trials), "complete": len(ok),
            "right_way": sum(d > EPS for d in shift), "wrong_way": sum(d < -EPS for d in shift),
            "unchanged": sum(abs(d) <= EPS for d in shift), "median_margin_shift": float(np.median(shift)) if shift else None,
            "turn_visible_p50_s": pct([t["visible_s"] for t in ok], 50),
            "turn_visible_p99_s": pct([t["visible_s"] for t in ok], 99),
            "feedback_effect_p50_s": pct([t["effect_s"] for t in ok if "effect_s" in t], 50),
            "feedback_effect_p99_s": pct([t["effect_s"] for t in ok if "effect_s" in t], 99),
            "by_kind": {k: {"right_way": sum(t["after"] - t["before"] > EPS for t in ok if t["kind"] == k),
                            "wrong_way": sum(t["after"] - t["before"] < -EPS for t in ok if t["kind"] == k)}
                        for k in KINDS},
            "wrong_trials": [{k: t[k] for k in ("a", "b", "kind", "before", "after")} for t in ok
                             if t["after"] - t["before"] < -EPS][:20]}


def _margin(d, t) -> float | None:
    if d.error or t["a"] not in d.scores:
        return None
    return d.scores[t["a"]] - d.scores[t["b"]]


def _poll(client, pending: list[dict], until, timeout: float = 30.0) -> None:
    """Route every pending trial's similar query until ``until(trial, decision)`` is true (or the timeout)."""
    end = time.monotonic() + timeout
    while pending and time.monotonic() < end:
        futs = [(t, client.route_async(t["user"], PREFACE + t["query"], deadline_ms=DEADLINE_MS)) for t in pending]
        pending[:] = [t for t, f in futs if not until(t, f.result(timeout=30))]
        time.sleep(0.02)


def run_wave(client, trials: list[dict]) -> None:
    for t in trials:
        t["turn_a"] = client.publish_turn(user_id=t["user"], conversation_id=f"{t['user']}-c", turn_index=0,
                                          query=t["query"], llm_id=t["a"], response="answer A").event_id
        t["turn_b"] = client.publish_turn(user_id=t["user"], conversation_id=f"{t['user']}-c", turn_index=0,
                                          query=t["query"], llm_id=t["b"], response="answer B").event_id
    client.flush()
    t0 = time.monotonic()

    def visible(t, d):
        if {t["turn_a"], t["turn_b"]} <= set(d.turn_ids) and _margin(d, t) is not None:
            t["visible_s"], t["before"] = time.monotonic() - t0, _margin(d, t)
            return True
        return False

    _poll(client, list(trials), visible)
    ready = [t for t in trials if "before" in t]
    for t in ready:
        if t["kind"] == "pairwise":
            client.publish_feedback(user_id=t["user"], turn_id=t["turn_a"], preferred_llm_id=t["a"],
                                    rejected_llm_id=t["b"], rejected_turn_id=t["turn_b"])
        elif t["kind"] == "thumbs":
            client.publish_feedback(user_id=t["user"], turn_id=t["turn_a"], thumbs_up=True)
            client.publish_feedback(user_id=t["user"], turn_id=t["turn_b"], thumbs_up=False)
        else:
            client.publish_feedback(user_id=t["user"], turn_id=t["turn_a"], score=9.0)
            client.publish_feedback(user_id=t["user"], turn_id=t["turn_b"], score=3.0)
    client.flush()
    t1 = time.monotonic()

    def moved(t, d):
        m = _margin(d, t)
        if m is not None and abs(m - t["before"]) > EPS:
            t["effect_s"] = time.monotonic() - t1
            return True
        return False

    _poll(client, list(ready), moved)
    time.sleep(2.0)
    futs = [(t, client.route_async(t["user"], PREFACE + t["query"], deadline_ms=DEADLINE_MS)) for t in ready]
    for t, f in futs:
        m = _margin(f.result(timeout=30), t)
        if m is not None:
            t["after"] = m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "bench" / "default")
    ap.add_argument("--steps", type=int, default=TrainConfig().steps,
                    help="training steps of the served model (default: the training default, %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offline-samples", type=int, default=60, help="test histories for the offline check")
    ap.add_argument("--users-per-pair", type=int, default=1, help="fresh users per (ordered pair, kind)")
    ap.add_argument("--wave", type=int, default=36, help="trials run at once")
    ap.add_argument("--no-live", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feedback.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    load0 = os.getloadavg()
    model, ds = train_model(args.data, args.steps, args.seed)
    model.eval()
    off = offline_check(model, ds, args.offline_samples, args.seed)
    print(f"offline: {off}", flush=True)
    res = live(model, ds.llms, f"GMTRouter trained {args.steps} steps on the default benchmark", args.seed, args.wave,
               args.users_per_pair) if not args.no_live else {}
    out = {"command": command_line(), **res,
           "offline": off, "load_avg_start": load0, "load_avg_end": os.getloadavg(),
           "machine": machine_facts()}
    write_json(args.out, out)
    md = ["# Feedback moves the decision the way the user asked\n", f"Command: `{out['command']}`\n"]
    if res:
        md += [f"Live, through the local stack ({res['model']}): {res['trials']} trials ({res['complete']} complete): "
               f"**{res['right_way']} right way, {res['wrong_way']} wrong way**, {res['unchanged']} unchanged; median "
               f"margin shift {res['median_margin_shift']:+.3f}. Both turns visible to routing p50 "
               f"{res['turn_visible_p50_s']} s (p99 {res['turn_visible_p99_s']}); the feedback's effect visible p50 "
               f"{res['feedback_effect_p50_s']} s (p99 {res['feedback_effect_p99_s']}).", "",
               "| kind | right way | wrong way |", "|---|---|---|"]
        md += [f"| {k} | {v['right_way']} | {v['wrong_way']} |" for k, v in res["by_kind"].items()]
    md += ["", f"Offline, same model, real histories of {args.offline_samples} test users x 72 ordered pairs: "
               f"{off['checks']} checks, **{off['wrong_way']} wrong way**, median margin shift "
               f"{off['median_margin_shift']:+.3f} (smallest {off['min_margin_shift']:+.4f}).",
           "", f"Load average {load0[0]:.2f} -> {out['load_avg_end'][0]:.2f} (2 cores)."]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
