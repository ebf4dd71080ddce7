"""Prequential, online: live decisions against the feedback seen so far, through the real pipeline.

    python bench/online.py        # -> bench/results/online.{json,md,png}
    python bench/online.py --init-model CKPT --skip-users 400 --out bench/results/online_shipped.json

where CKPT is the model of `prefstream fit --train var/bench/default/train.jsonl --valid
var/bench/default/valid.jsonl --registry var/pretrained --promote` (files of `prefstream simulate --out
var/bench/default`, seed 0; bench/quality.py writes the same ones).

A local stack (`prefstream up`: Tansu broker, FalkorDB, Ray router workers, Faust ingest, the periodic
trainer) starts with no model (the count-based scorer serves until a trained candidate beats it), or with
``--init-model``: a checkpoint trained elsewhere, as a deployment would ship one. It must not have seen the
stream's users: ``--skip-users N`` streams users N.. of the seed's population, so a model trained on the
default benchmark (`prefstream simulate`, seed 0, whose 400 training users are the population's first 400;
its test-only users never reach training) meets only users it never saw. Another ``--seed`` also draws other LLM
styles (what users like or dislike in each LLM, docs/simulator.md); ``--style-seed 0`` keeps the shipped model's
LLM styles with the other seed's users.

Simulated users (default simulator) stream their chats and feedback through Kafka in steps. At every step
each user's next comparison is first routed live among the LLMs that will answer it (a RouteRequest with
those candidates), scored against the user's true utilities (the decision is
right when it picks the answer the user rates highest), and only then published with its feedback. So every
decision is predicted from feedback that precedes it, as in production. Next to it, the per-user win count
over the same published events answers the same comparisons. A quarter of the users join only halfway:
their accuracy by their n-th comparison is the cold-start curve.

``--new-llm X`` adds an LLM mid-stream, as an operator registers one: X is left out of the catalog until the
stream's second half, and its comparisons before then never happen. The shipped model (``--init-model``) should
not have seen X either: train it with `prefstream fit` on files without X's answers (bench/new_llm.py writes
them, under var/bench/new_llm/X). Each step then reports the decisions among candidates that include X, served
and counted, and the trainer table says which cycles oversampled X (trainer/refresh.py) and which were promoted.

    python bench/online.py --pause 12 --users 200 --init-model CKPT_WITHOUT_X --skip-users 400 \
        --new-llm llama3-chatqa-1.5-70b --out bench/results/online_new_llm.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# a step routes hundreds of requests at once; this measures quality, not latency, so no request is shed
DEADLINE_MS = 120_000
sys.path.insert(0, str(ROOT))

from bench.common import pct, write_json  # noqa: E402


def _comparisons(sim, events):
    """(user, [events of one comparison: its ChatTurns then its Feedback], the sim group) in time order."""
    by_turn: dict[str, list] = {}
    for e in events:
        if e.type == "chat_turn":
            by_turn.setdefault(f"{e.conversation_id}:{e.turn_index + 1}", []).append(e)
        elif e.type == "feedback":
            tid = e.turn_id.rsplit(":", 1)[0]
            by_turn.setdefault(tid, []).append(e)
    return [(g.user_id, by_turn[f"{g.conversation_id}:{g.turn}"], g) for g in sim.history]


def _wait(check, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.5)
    return False


def _llms(sim, g) -> list[str]:
    return [sim.data.llm_ids[m] for m in g.llm_idx]


def hold_back(sim, order: list, llm: str, steps: int) -> tuple[list[list], int]:
    """The stream cut into ``steps`` batches with ``llm`` registered halfway: its comparisons before then never
    happened (it did not exist), the rest stream as they come. (batches, the step it is registered before)."""
    cut = len(order) // 2
    before = [c for c in order[:cut] if llm not in _llms(sim, c[2])]
    first, second = steps // 2, steps - steps // 2
    batches = [[before[i] for i in ix] for ix in np.array_split(np.arange(len(before)), first)]
    batches += [[order[cut + i] for i in ix] for ix in np.array_split(np.arange(len(order) - cut), second)]
    return batches, first


def stretched(events: list, scale: float) -> list:
    """``events`` with their times ``scale`` times as far from the first one: the same stream over a longer time."""
    if scale == 1.0:
        return events
    t0 = min(e.timestamp for e in events)
    return [e.model_copy(update={"timestamp": t0 + int((e.timestamp - t0) * scale)}) for e in events]


def schedule(sim, skip: int = 0, time_scale: float = 1.0) -> tuple[list, list, set, list]:
    """(LLM catalog events, users, late users, comparisons in publishing order) of the simulator's users
    from the ``skip``-th on: a quarter of the users join halfway, the rest's first half of comparisons comes
    first. ``time_scale``: the stream spread over that many times its simulated time (stretched)."""
    events = stretched(sim.events(), time_scale)
    catalog = [e for e in events if e.type == "llm_registered"]
    streamed = {u.user_id for u in sim.users[skip:]}
    comps = [c for c in _comparisons(sim, [e for e in events if e.type != "llm_registered"]) if c[0] in streamed]
    users = sorted({u for u, _, _ in comps})
    late = set(users[::4])  # join halfway
    early = [c for c in comps if c[0] not in late]
    half = len(early) // 2
    order = early[:half] + sorted(early[half:] + [c for c in comps if c[0] in late], key=lambda c: c[2].timestamp)
    return catalog, users, late, order


def _route_batch(client, sim, batch: list, counts, llm_index: dict, late: set, seen_per_user: dict,
                 nth: dict) -> tuple[list, list, dict, list]:
    """Route a step's comparisons live (all sent first) and score them and the per-user count's picks
    against the users' true utilities; updates seen_per_user and the late users' nth.
    (hits, count hits, decisions per scorer, router latencies)."""
    futs = [client.route_async(u, sim.data.queries[g.query_idx], candidates=_llms(sim, g),
                               conversation_id=g.conversation_id, deadline_ms=DEADLINE_MS)
            for u, _, g in batch]
    picks = counts.choose([u for u, _, _ in batch], [_llms(sim, g) for _, _, g in batch])
    hits, count_hits, scorers, lat = [], [], {}, []
    for (u, evs, g), f, cp in zip(batch, futs, picks):
        d = f.result(timeout=120)
        best = g.llm_idx[int(np.argmax(g.utility))]
        ok = not d.error and llm_index.get(d.chosen_llm_id) == best
        hits.append(ok)
        count_hits.append(llm_index[cp] == best)
        kind = "shed" if d.shed else d.scorer or "error"  # shed: answered at once from the prior, past its deadline
        scorers[kind] = scorers.get(kind, 0) + 1
        lat.append(d.latency_ms)
        n = seen_per_user.get(u, 0)
        if u in late:
            nth.setdefault(n, []).append((ok, llm_index[cp] == best))
        seen_per_user[u] = n + 1
    return hits, count_hits, scorers, lat


def _publish_batch(client, batch: list, counts) -> tuple[int, int]:
    """Publish the step's answers and feedback (and count them); (chat turns, feedback events) published."""
    turns = fbs = 0
    for _, evs, _ in batch:  # now the answers and the feedback happen
        for e in evs:
            client.publish(e)
            counts.add(e)
            fbs += e.type == "feedback"
            turns += e.type == "chat_turn"
    return turns, fbs


def _new_llm_row(sim, batch: list, hits: list, count_hits: list, llm: str | None) -> dict:
    """The step's decisions among candidates that include ``llm``: how many, served and count accuracy."""
    if llm is None:
        return {}
    ix = [i for i, (_, _, g) in enumerate(batch) if llm in _llms(sim, g)]
    acc = lambda v: float(np.mean([v[i] for i in ix])) if ix else None  # noqa: E731
    return {"new_llm_decisions": len(ix), "new_llm_accuracy": acc(hits), "new_llm_per_user_accuracy": acc(count_hits)}


def _run_steps(client, store, trainer_log, sim, batches: list, late: set, llm_index: dict, counts, args,
               registrations: dict) -> tuple[list, dict]:
    """The stream's batches: route each step live, then publish it and wait for the graph to hold it; before
    step k, publish ``registrations[k]`` (LLMs registered mid-stream). (per-step rows, late users' {n-th
    comparison: [(served right, count right)]}). Each row also has the level offsets file and the live watch's
    tally (trainer/watch.py) as the step began."""
    from trainer.calibration import read_offsets
    from trainer.watch import read_watch

    steps, nth = [], {}
    n_turns = n_fb = 0
    seen_fb, seen_per_user = 0, {}
    for k, batch in enumerate(batches):
        for e in registrations.get(k, []):
            client.publish(e)
            client.flush()
            _wait(lambda: e.llm_id in store.llm_catalog(), 60)
        offsets = read_offsets(trainer_log.registry.root)  # as the step begins (routers follow it within seconds)
        watch = read_watch(trainer_log.registry.root)
        hits, count_hits, scorers, lat = _route_batch(client, sim, batch, counts, llm_index, late, seen_per_user, nth)
        turns, fbs = _publish_batch(client, batch, counts)
        seen_fb += fbs
        n_turns += turns
        n_fb += fbs
        client.flush()
        _wait(lambda: store.count("Turn") >= n_turns and store.count("Feedback") >= n_fb, 120)
        steps.append({"step": k, "feedback_seen": seen_fb, "decisions": len(batch),
                      "accuracy": float(np.mean(hits)), "per_user_accuracy": float(np.mean(count_hits)),
                      **_new_llm_row(sim, batch, hits, count_hits, args.new_llm),
                      "scorers": scorers, "router_ms_p50": pct(lat, 50),
                      "trainer_cycles": len(trainer_log.history()),
                      "offsets": {k: offsets.get(k) for k in ("version", "offsets", "source", "games")},
                      "watch": watch.to_dict() if watch is not None else None})
        print(f"step {k}: {seen_fb} feedback seen, served {steps[-1]['accuracy']:.3f} vs per-user count "
              f"{steps[-1]['per_user_accuracy']:.3f} ({scorers})", flush=True)
        time.sleep(args.pause)
    return steps, nth


def _new_user_curve(nth: dict) -> list[dict]:
    """Late users' accuracy by their n-th comparison (points with at least 5 users)."""
    return [{"n": n, "accuracy": float(np.mean([a for a, _ in v])), "per_user_accuracy": float(np.mean([b for _, b in v])),
             "users": len(v)} for n, v in sorted(nth.items()) if len(v) >= 5]


def run(args) -> dict:
    from prefstream.config import Settings
    from stack.demo import PublishedCounts, promotions
    from prefstream.procs import free_port, free_port_span
    from stack.services import RAY_PORT_SPAN
    from stack.local import Stack
    from streams.client import PrefstreamClient
    from trainer.refresh import RefreshTrainer
    from trainer.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(seed=args.seed, style_seed=args.style_seed, n_users=args.skip_users + args.users,
                              n_new_users=0, turns_min=args.turns, turns_max=args.turns + 10))
    catalog, users, late, order = schedule(sim, args.skip_users, args.time_scale)
    registrations: dict[int, list] = {}
    if args.new_llm:  # registered halfway: held out of the catalog until then
        batches, k = hold_back(sim, order, args.new_llm, args.steps)
        registrations[k] = [e for e in catalog if e.llm_id == args.new_llm]
        catalog = [e for e in catalog if e.llm_id != args.new_llm]
        order = [c for b in batches for c in b]
    else:
        batches = [[order[i] for i in ix] for ix in np.array_split(np.arange(len(order)), args.steps)]
    tmp = Path(tempfile.mkdtemp(prefix="prefstream-online-"))
    s = Settings(broker_port=free_port(), graph_port=free_port(), ray_port=free_port_span(RAY_PORT_SPAN),
                 run_dir=tmp / "run", model_dir=tmp / "models", graph_name="online", trainer_every_minutes=60.0,
                 trainer_after_feedback=args.train_after_feedback, trainer_steps=args.train_steps,
                 trainer_window_minutes=args.window_minutes, trainer_window_cuts=not args.anywhere_cuts,
                 encoder_max_seq_length=128,
                 **({"trainer_warm_lr": args.warm_lr} if args.warm_lr is not None else {}),
                 **({"trainer_anchor": args.anchor} if args.anchor is not None else {}),
                 **({"trainer_min_new_pairs": args.min_new_pairs} if args.min_new_pairs is not None else {}),
                 **({"trainer_offsets": False} if args.no_offsets else {}),
                 **({"trainer_watch": False} if args.no_watch else {}))
    counts = PublishedCounts({e.llm_id: e.price_out for es in [catalog, *registrations.values()] for e in es})
    llm_index = {m: j for j, m in enumerate(sim.data.llm_ids)}
    shipped = None
    if args.init_model is not None:  # served from the first request, as a deployment ships a trained model
        from trainer.registry import ModelRegistry

        shipped = ModelRegistry(s.model_dir).publish(args.init_model, promote=True)
    stack = Stack(s)
    stack.up(apps=True, log=lambda m: print(f"  {m}", flush=True))
    t_start = time.monotonic()
    try:
        from graphstore import open_store

        store = open_store(stack.s)
        trainer_log = RefreshTrainer(None, s.model_dir)
        with PrefstreamClient(stack.s) as client:
            for e in catalog:
                client.publish(e)
            client.flush()
            time.sleep(3.0)
            steps, nth = _run_steps(client, store, trainer_log, sim, batches, late, llm_index, counts, args,
                                    registrations)
            cycles = trainer_log.history()
        store.close()
    finally:
        stack.down(log=lambda m: None)
    curve = _new_user_curve(nth)
    return {"steps": steps, "new_user_curve": curve, "promotions": promotions(cycles), "users": len(users),
            "init_model": str(args.init_model) if args.init_model else None, "shipped_version": shipped,
            "skip_users": args.skip_users, "style_seed": args.style_seed, "new_llm": args.new_llm, "trainer_warm_lr": s.trainer_warm_lr,
            "trainer_anchor": s.trainer_anchor, "trainer_min_new_pairs": s.trainer_min_new_pairs,
            "trainer_offsets": s.trainer_offsets, "trainer_watch": s.trainer_watch,
            "registered_before_step": next(iter(registrations), None), "time_scale": args.time_scale,
            "trainer_window_minutes": s.trainer_window_minutes, "trainer_window_cuts": s.trainer_window_cuts,
            "late_users": len(late), "comparisons": len(order), "seconds": time.monotonic() - t_start}


def _unlearned_cell(p: dict) -> str:
    a = p.get("unlearned_accuracy") or {}
    return f"{p['unlearned_pairs']}, {a['candidate']:.3f} / {a['serving']:.3f}" if a else "-"


def _offsets_cell(p: dict) -> str:
    """What the cycle chose (trainer/calibration.py): its fit, the offsets in force or none, by their fresh pairs."""
    o = p.get("offsets") or {}
    if not o:
        return "-"
    fitted = ", ".join(f"{m} {b:+.2f}" for m, b in o["fitted_before_cutoff"].items())
    right = ", ".join(f"{k} {n:.4g}" for k, n in o["fresh_scores"].items())
    return (f"fit {fitted}; {o['chosen']} chosen ({o['criterion']} on {o['fresh_pairs']} fresh pairs: {right})"
            + ("" if o.get("written", True) else "; not written: a recount's fit was newer"))


def _route(p: dict) -> str:
    return {"unlearned LLMs": " (on unlearned LLMs)"}.get(p.get("route", ""), "")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = [s["feedback_seen"] for s in res["steps"]]
    a.plot(x, [s["accuracy"] for s in res["steps"]], "o-", label="live decisions (what served)")
    a.plot(x, [s["per_user_accuracy"] for s in res["steps"]], "s--", label="per-user win count, same events")
    if res.get("new_llm"):
        late = [s for s in res["steps"] if s.get("new_llm_decisions")]
        a.plot([s["feedback_seen"] for s in late], [s["new_llm_accuracy"] for s in late], "^-",
               label=f"live, candidates with {res['new_llm']}")
        a.plot([s["feedback_seen"] for s in late], [s["new_llm_per_user_accuracy"] for s in late], "v--",
               label=f"count, candidates with {res['new_llm']}")
    a.set_xlabel("feedback events seen")
    a.set_ylabel("picked the answer the user rates best")
    a.legend(fontsize=8)
    c = res["new_user_curve"]
    b.plot([p["n"] + 1 for p in c], [p["accuracy"] for p in c], "o-", label="live decisions")
    b.plot([p["n"] + 1 for p in c], [p["per_user_accuracy"] for p in c], "s--", label="per-user win count")
    b.set_xlabel("a late user's n-th comparison")
    b.set_ylabel("accuracy")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _overall(res: dict, key: str) -> float:
    """Accuracy over every decision of the stream (steps weighted by their decisions)."""
    n = sum(s["decisions"] for s in res["steps"])
    return sum(s[key] * s["decisions"] for s in res["steps"]) / max(n, 1)


def _watch_cell(w: dict | None) -> str:
    """The live watch's tally (trainer/watch.py): pairs, serving vs counting, discordant won/lost, evidence."""
    if not w:
        return "-"
    if not w["pairs"]:
        return f"{w['version']}: no pairs yet"
    acc = w["accuracy"]
    return (f"{w['version']}: {w['pairs']} pairs, {acc['serving']:.3f} vs {acc['count']:.3f}, {w['wins']}/"
            f"{w['losses']}, evidence {math.exp(min(w['log_evidence'], 700.0)):.3g}, last check "
            f"{w.get('seconds', 0):.2f} s"
            + (" demoted" if w["demoted"] else ""))


def _new_llm_cells(step: dict, llm: str | None) -> str:
    if not llm:
        return ""
    o = step.get("offsets") or {}
    off = (", ".join(f"{m} {b:+.2f}" for m, b in o["offsets"].items()) + f" ({o.get('source') or 'cycle'}, "
           f"{o.get('version')})" if o.get("offsets") else "-")
    if not step.get("new_llm_decisions"):
        return f" 0 | - | - | {off} |"
    return (f" {step['new_llm_decisions']} | {step['new_llm_accuracy']:.3f} | {step['new_llm_per_user_accuracy']:.3f}"
            f" | {off} |")


def _new_llm_md(res: dict) -> list[str]:
    """With --new-llm: when it was registered, and the decisions among candidates that include it, pooled."""
    llm = res.get("new_llm")
    if not llm:
        return []
    rows = [s for s in res["steps"] if s.get("new_llm_decisions")]
    n = sum(s["new_llm_decisions"] for s in rows)
    acc = lambda key: sum(s[key] * s["new_llm_decisions"] for s in rows) / max(n, 1)  # noqa: E731
    return [f"`{llm}` registered before step {res['registered_before_step']} (none of its comparisons before). "
            f"The {n} decisions among candidates that include it: served {acc('new_llm_accuracy'):.3f}, per-user "
            f"count {acc('new_llm_per_user_accuracy'):.3f}.\n"]


def _window_md(res: dict) -> list[str]:
    """The stream's time scale and the trainer's window, when either is not the default (all of the stream)."""
    if res.get("time_scale", 1.0) == 1.0 and res.get("trainer_window_minutes", 1e9) >= 1e9:
        return []
    cuts = "in the window" if res.get("trainer_window_cuts", True) else "anywhere in the user's history"
    return [f"The stream spread over {res['time_scale']:g} times its simulated time; the trainer's window is "
            f"{res['trainer_window_minutes'] / 1440:g} days (PREFSTREAM_TRAINER_WINDOW_MINUTES), each sample's cut "
            f"{cuts} (PREFSTREAM_TRAINER_WINDOW_CUTS).\n"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=120)
    ap.add_argument("--turns", type=int, default=30, help="comparisons per user (about)")
    ap.add_argument("--steps", type=int, default=16, help="steps the stream is cut into")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between steps (ingest, trainer)")
    ap.add_argument("--train-after-feedback", type=int, default=600)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--style-seed", type=int, help="draw the LLMs' styles as under this seed, the users from --seed "
                    "(SimConfig.style_seed; 0: the LLMs of a shipped model trained on the default benchmark)")
    ap.add_argument("--init-model", type=Path, help="a GMTRouter checkpoint served from the start (default: none, "
                    "counting serves until a trained candidate beats it)")
    ap.add_argument("--skip-users", type=int, default=0,
                    help="stream the seed's users from this index on (users a shipped model never saw)")
    ap.add_argument("--new-llm", help="register this LLM only halfway (none of its comparisons before): does the "
                    "periodic trainer learn it live? (rows gain the decisions among candidates that include it)")
    ap.add_argument("--warm-lr", type=float, help="the trainer's peak learning rate from the serving model "
                    "(PREFSTREAM_TRAINER_WARM_LR; default: the setting's)")
    ap.add_argument("--anchor", type=float, help="the trainer's pull back to the serving weights "
                    "(PREFSTREAM_TRAINER_ANCHOR; default: the setting's)")
    ap.add_argument("--min-new-pairs", type=int, help="the judge's second route: fewest fresh pairs with LLMs the "
                    "serving model never learned (PREFSTREAM_TRAINER_MIN_NEW_PAIRS, 0: off; default: the setting's)")
    ap.add_argument("--no-offsets", action="store_true", help="cycles fit no level offsets for LLMs the serving "
                    "model never learned (PREFSTREAM_TRAINER_OFFSETS=false)")
    ap.add_argument("--no-watch", action="store_true", help="no live watch: only cycles demote a serving model "
                    "(PREFSTREAM_TRAINER_WATCH=false)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="spread the stream over this many times its "
                    "simulated time (about two weeks): long-lived users")
    ap.add_argument("--window-minutes", type=float, default=1e9, help="the trainer's window "
                    "(PREFSTREAM_TRAINER_WINDOW_MINUTES; default: all of the stream)")
    ap.add_argument("--anywhere-cuts", action="store_true", help="draw each sample's cut anywhere in the user's "
                    "history, not in the window (PREFSTREAM_TRAINER_WINDOW_CUTS=false)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "online.json")
    args = ap.parse_args()
    load0 = os.getloadavg()
    res = run(args)
    res.update(command=" ".join(shlex.quote(a) for a in ["python", "bench/online.py", *sys.argv[1:]]),
               load_avg_start=load0, load_avg_end=os.getloadavg())
    write_json(args.out, res)
    plot(res, args.out.with_suffix(".png"))
    worst = min(s["accuracy"] - s["per_user_accuracy"] for s in res["steps"])
    md = ["# Online, prequential: live decisions against the per-user win count\n", f"Command: `{res['command']}`\n",
          f"{res['users']} users ({res['late_users']} join halfway), {res['comparisons']} comparisons, "
          f"{len(res['steps'])} steps; worst step: served - per-user count = {worst:+.3f}; over all decisions: "
          f"served {_overall(res, 'accuracy'):.3f}, per-user count {_overall(res, 'per_user_accuracy'):.3f}.\n",
          ("Started with no model: the count-based scorer serves until a trained candidate beats it.\n"
           if not res["init_model"] else f"Started serving `{res['init_model']}` (published as "
           f"{res['shipped_version']}), trained on other users; the stream's users are the seed's users "
           f"{res['skip_users']}.. (never in its training).\n"),
          *([f"The LLMs' styles are drawn as under seed {res['style_seed']} (SimConfig.style_seed), the users "
             "under the stream's seed.\n"] if res.get("style_seed") is not None else []),
          *_new_llm_md(res), *_window_md(res), f"Trainer cycles fine-tune the serving model at peak learning rate "
          f"{res['trainer_warm_lr']:g} (PREFSTREAM_TRAINER_WARM_LR), pulled back to its weights by "
          f"{res.get('trainer_anchor', 0.0):g} (PREFSTREAM_TRAINER_ANCHOR); the judge's route for LLMs the serving "
          f"model never learned needs {res.get('trainer_min_new_pairs', 0)} of their fresh pairs "
          f"(PREFSTREAM_TRAINER_MIN_NEW_PAIRS, 0: off); level offsets for LLMs it never learned "
          f"{'on' if res.get('trainer_offsets') else 'off'} (PREFSTREAM_TRAINER_OFFSETS); live watch "
          f"{'on' if res.get('trainer_watch') else 'off'} (PREFSTREAM_TRAINER_WATCH).\n",
          "| step | feedback seen | served acc | per-user count acc | scorers | trainer cycles | live watch as the "
          "step began |"
          + (" with the new LLM: decisions | served | count | level offsets as the step began |"
             if res["new_llm"] else ""),
          "|---|---|---|---|---|---|---|" + ("---|---|---|---|" if res["new_llm"] else "")]
    md += [f"| {s['step']} | {s['feedback_seen']} | {s['accuracy']:.3f} | {s['per_user_accuracy']:.3f} | "
           f"{json.dumps(s['scorers'])} | {s['trainer_cycles']} | {_watch_cell(s.get('watch'))} |"
           + _new_llm_cells(s, res["new_llm"])
           for s in res["steps"]]
    md += ["", "Trainer cycles (candidate, serving and counting on the same fresh pairs):", "",
           "| candidate | trigger | oversampled | serving before | accuracy | pairs | with unlearned LLMs: pairs, "
           "candidate / serving | promoted | serving after | level offsets for the serving model |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {p['candidate']} | {p['trigger']} | {', '.join(p['boosted']) or '-'} | {p['serving_before']} | "
           f"{json.dumps({k: round(v, 3) for k, v in p['accuracy'].items()})} | "
           f"{p['pairs']} | {_unlearned_cell(p)} | {p['promoted']}{_route(p)} | {p['serving_after']} | "
           f"{_offsets_cell(p)} |" for p in res["promotions"]]
    md += ["", f"Load average {load0[0]:.2f} -> {res['load_avg_end'][0]:.2f} (2 cores)."]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
