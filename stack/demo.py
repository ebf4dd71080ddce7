"""`prefstream demo`: the whole system on a local stack, with simulated users whose taste is known.

1. `up`: broker, graph server, Ray, and the apps (Faust ingest, Ray router workers, periodic trainer).
2. Register the 9 LLMs of ../shared/data/llmrouter, then stream the simulated users' chats and feedback
   through Kafka in phases (oldest first).
3. After each phase, route a fixed set of new requests of the same users through the router and score
   each decision against the user's true best LLM, next to the single LLM that is best on average.
4. Summary table, a PNG of accuracy and latency over the phases, and the audit of one user.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from prefstream.options import add_stack_options, settings_from


@dataclass
class Phase:
    phase: int
    events_published: int
    turns_in_graph: int
    model_version: str | None
    decisions: int
    errors: int
    fallbacks: int
    accuracy: float  # chosen == the user's true best LLM
    per_user_accuracy: float  # the per-user win count over the same published events, on the same requests
    scorer: str  # what answered the decisions ("count", "model v0002", ...; several if it changed mid-phase)
    global_best_accuracy: float  # always the LLM best on average over these requests
    mean_utility_ratio: float  # chosen LLM's true utility / best LLM's utility (shifted to >= 0)
    p50_ms: float
    p99_ms: float
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class PublishedCounts:
    """The per-user win count over exactly the events published so far: the bar the router must meet."""

    def __init__(self, prices: dict[str, float]):
        self.prices = prices
        self.turns: dict[str, tuple[str, str, int, str]] = {}  # turn id -> (user, conversation, index, llm)
        self.rating: dict[str, float] = {}

    def add(self, e) -> None:
        if e.type == "chat_turn":
            self.turns[e.event_id] = (e.user_id, e.conversation_id, e.turn_index, e.llm_id)
        elif e.type == "feedback":
            self.rating[e.turn_id] = e.rating
            rejected = getattr(e.signal, "rejected_turn_id", None)
            if rejected:
                self.rating[rejected] = 0.5 if e.signal.tie else 0.0

    def choose(self, users: list[str], candidates: list[list[str]] | None = None) -> list[str]:
        """Each user's LLM (among ``candidates[i]``, default all) with the highest win rate shrunk towards the
        global rate (ties: the cheaper)."""
        from graphstore.counts import comparisons, per_llm, win_counts

        rows: dict[str, list[tuple]] = {}  # user -> (conversation, turn index, llm, rating) of each rated answer
        for tid, r in self.rating.items():
            if tid in self.turns:
                u, c, i, m = self.turns[tid]
                rows.setdefault(u, []).append((c, i, m, r))
        wins, games = win_counts(comparisons((u, *row) for u, rs in rows.items() for row in rs))
        rate = {m: wins.get(m, 0.0) / games[m] if games.get(m) else 0.5 for m in self.prices}
        out = []
        for i, u in enumerate(users):
            counted = per_llm(rows.get(u, []))  # {llm: (wins, games)}

            def shrunk(m: str) -> float:
                w, g = counted.get(m, (0.0, 0.0))
                return (w + 2 * rate[m]) / (g + 2)

            cands = candidates[i] if candidates is not None else list(self.prices)
            out.append(max(cands, key=lambda m: (shrunk(m), -self.prices[m])))
        return out


def _wait(check, timeout: float, interval: float = 0.5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(interval)
    return False


@dataclass
class Workload:
    """The simulated users' history (streamed in phases) and the fixed requests routed after each phase."""

    catalog: list
    history: list
    user_ids: list[str]
    llm_ids: list[str]
    requests: list
    util: np.ndarray  # [R, M] each request's true utility of each LLM
    global_best: int  # the LLM best on average over the requests


def _workload(args: argparse.Namespace) -> Workload:
    from trainer.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(seed=args.seed, n_users=args.users, n_new_users=0, turns_min=args.turns,
                              turns_max=args.turns + 10))
    events = sim.events()
    rng = np.random.default_rng(args.seed + 1)
    ids = [u.user_id for u in sim.users]
    requests = [sim.new_request(ids[i % len(ids)], rng) for i in range(args.requests)]
    util = np.stack([r.utility for r in requests])
    return Workload([e for e in events if e.type == "llm_registered"], [e for e in events if e.type != "llm_registered"],
                    ids, list(sim.data.llm_ids), requests, util, int(np.argmax(util.mean(0))))


def _demo_settings(args: argparse.Namespace):
    from prefstream.procs import free_port, free_port_span
    from stack.services import RAY_PORT_SPAN

    base = settings_from(args)
    ports = {k: getattr(args, k) or free_port() for k in ("broker_port", "graph_port")}
    return base.model_copy(update={
        **ports, "ray_port": args.ray_port or free_port_span(RAY_PORT_SPAN),
        "run_dir": args.run_dir or Path("var/demo/run"),
        "model_dir": Path(args.out) / "models", "trainer_after_feedback": args.train_after_feedback,
        "trainer_every_minutes": 60.0, "trainer_steps": args.train_steps, "trainer_users": 1000,
        "trainer_window_minutes": 1e9, "router_workers": args.workers, "unknown_llm_grace_s": 30.0,
        "count_refresh_s": 1.0,  # the router recounts the global rates at each poll of its registry (2 s)
        # the data set's queries are long (logic puzzles, code): 128 tokens, the default (bench/results/encoder.md)
        "encoder_max_seq_length": args.max_seq_length})


def _phase_line(p: Phase, global_best: str) -> str:
    return (f"phase {p.phase}: {p.events_published:,} events in, {p.turns_in_graph:,} turns in graph; "
            f"accuracy {p.accuracy:.3f} ({p.scorer or '-'}) vs per-user count {p.per_user_accuracy:.3f}, "
            f"always {global_best} {p.global_best_accuracy:.3f}; p50 {p.p50_ms:.0f} ms ({p.seconds:.0f} s)")


def _run_phases(args, s, w: Workload, console) -> tuple[list[Phase], list[dict]]:
    """Stream the history in phases; after each, route the requests. The live table on a terminal, one plain
    line per phase otherwise. Returns the phases and the trainer's cycles."""
    from contextlib import nullcontext

    from rich.live import Live
    from rich.table import Table

    from graphstore import open_store
    from graphstore.cli import audit
    from streams.client import PrefstreamClient
    from trainer.refresh import RefreshTrainer

    phases: list[Phase] = []
    best = w.llm_ids[w.global_best]
    store = open_store(s, ensure_schema=False)
    store.clear()  # an empty graph (the local graph server reloads its last snapshot)
    store.ensure_schema()
    trainer_log = RefreshTrainer(None, s.model_dir)
    counts = PublishedCounts({e.llm_id: e.price_out for e in w.catalog})
    live = Live(Table(), console=console, refresh_per_second=4) if console.is_terminal else nullcontext()
    with PrefstreamClient(s) as client, live:
        for e in w.catalog:
            client.publish(e)
        client.flush()
        _wait(lambda: len(store.llm_catalog()) == len(w.catalog), 120)
        chunks = np.array_split(np.arange(len(w.history)), args.phases)
        published = 0
        for p in range(args.phases + 1):
            t0 = time.monotonic()
            if p > 0:  # stream the next slice of history, then let the ingest and the trainer catch up
                n_cycles = len(trainer_log.history())  # before publishing: a cycle may finish while we wait
                for i in chunks[p - 1]:
                    client.publish(w.history[i])
                    counts.add(w.history[i])
                client.flush()
                published += len(chunks[p - 1])
                turns = sum(1 for e in w.history[:published] if e.type == "chat_turn")
                feedback = sum(1 for e in w.history[:published] if e.type == "feedback")
                _wait(lambda: store.count("Turn") >= turns and store.count("Feedback") >= feedback, 300)
                _wait(lambda: len(trainer_log.history()) > n_cycles, args.train_wait)
                time.sleep(3.0)  # the router recounts the global win rates from the graph every 2 s
            phases.append(_evaluate(p, client, store, trainer_log, w.requests, w.util, w.global_best, w.llm_ids,
                                    published, time.monotonic() - t0, args.rate, counts))
            if console.is_terminal:
                live.update(_table(phases, best))
            else:
                console.print(_phase_line(phases[-1], best))
    console.rule(f"audit of user {w.user_ids[0]} (prefstream audit {w.user_ids[0]})")
    audit(store, w.user_ids[0], limit=8, out=console.file)
    store.close()
    return phases, trainer_log.history()


def _next_steps(args, s, w: Workload) -> list[str]:
    """The commands a user would type next (against the kept stack, or after `prefstream up`)."""
    where = f" --run-dir {s.run_dir}" if args.keep else ""
    q = w.requests[0].query.splitlines()[0][:60].replace('"', "'")
    lines = [f'prefstream route {w.user_ids[0]} "{q}"{where}   # which LLM for this user, and why',
             f"prefstream audit {w.user_ids[0]}{where}   # the user's turns, feedback and decisions",
             f"open {Path(args.out) / 'demo.png'}   # accuracy and latency per phase"]
    if args.keep:
        lines.append(f"prefstream down{where}   # stop the demo's stack")
    else:
        lines.insert(0, "# the demo stopped its stack: run `prefstream demo --keep` (or `prefstream up`) first")
    return lines


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stack.local import Stack

    console = Console(width=None if Console().is_terminal else 160)
    out = Path(args.out)
    shutil.rmtree(out / "models", ignore_errors=True)  # every demo starts from no model and an empty graph
    out.mkdir(parents=True, exist_ok=True)
    w = _workload(args)
    best = w.llm_ids[w.global_best]
    console.print(f"[bold]prefstream demo[/]: {len(w.user_ids)} simulated users, {len(w.history):,} chat/feedback "
                  f"events, {len(w.llm_ids)} LLMs; {args.requests} evaluation requests per phase; "
                  f"globally best single LLM: {best}")
    settings = _demo_settings(args)
    t_start = time.monotonic()
    shipped = None
    if args.ship_users > 0:  # before the stack starts: its routers serve the model from the first request
        from stack.demo_ship import ship_model

        shipped = ship_model(args.seed, args.users, args.ship_users, args.turns, args.ship_steps, out / "ship",
                             settings.model_dir, settings.encoder, progress=console.is_terminal)
        console.print(f"shipped model {shipped['version']}: trained on {args.ship_users} other users of the same "
                      f"population ({args.ship_steps} steps, validation AUC {shipped['valid'].get('auc', 0):.3f}) "
                      f"in {time.monotonic() - t_start:.0f} s")
    # the graph server reloads its last snapshot: drop it before the apps start, or the trainer's first cycle
    # would learn from the previous demo's users
    shutil.rmtree(settings.run_dir / "graph", ignore_errors=True)
    stack = Stack(settings)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the stack on a kill too
    stack.up(apps=True, log=lambda m: console.print(f"  {m}"))
    try:
        phases, cycles = _run_phases(args, stack.s, w, console)
    finally:
        if not args.keep:
            stack.down(log=lambda m: None)
    total = time.monotonic() - t_start
    result = {"phases": [asdict(p) for p in phases], "promotions": promotions(cycles), "shipped": shipped,
              "users": len(w.user_ids), "events": len(w.history),
              "requests_per_phase": args.requests, "global_best_llm": best, "seconds": total,
              "command": "prefstream demo " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                        sorted(vars(args).items()) if k in DEMO_FLAGS)}
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "demo.md").write_text(markdown(result, os.getloadavg()))
    _plot(phases, best, out / "demo.png")
    console.print(_table(phases, best))
    console.print(f"done in {total:.0f} s; results in {out / 'demo.json'}, plot {out / 'demo.png'}")
    console.print("next:\n  " + "\n  ".join(_next_steps(args, stack.s, w)), markup=False)
    return 0


def markdown(r: dict, load: tuple[float, ...]) -> str:
    """The demo's result as a short markdown report (what bench/results/demo.md holds)."""
    L = ["# Demo run (`./run demo`)\n", f"Command: `{r['command']}` (what `./run demo` runs with its defaults); "
         f"{r['seconds']:.0f} s on {os.cpu_count()} cores, load average {load[0]:.2f} at the end, "
         f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC.\n",
         *([f"Shipped model {sh['version']}: trained before the stack started on {sh['users']} other users of the "
            f"same simulated population ({sh['steps']} steps, validation AUC {sh['valid'].get('auc', 0):.3f}, "
            f"{sh['seconds']:.0f} s of training); it serves from the first request.\n"]
           if (sh := r.get("shipped")) else []),
         "| phase | events streamed | turns in graph | scorer | decisions | accuracy vs true best LLM | per-user count, "
         f"same events | always {r['global_best_llm']} | utility ratio | p50 ms | p99 ms |", "|---" * 11 + "|"]
    for p in r["phases"]:
        L.append(f"| {p['phase']} | {p['events_published']} | {p['turns_in_graph']} | {p['scorer']} | {p['decisions']} | "
                 f"{p['accuracy']:.3f} | {p['per_user_accuracy']:.3f} | {p['global_best_accuracy']:.3f} | "
                 f"{p['mean_utility_ratio']:.3f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |")
    L += ["", "Trainer cycles (candidate, serving model and counting judged on the same fresh pairs):", "",
          "| candidate | serving before | accuracy | pairs | promoted | reason |", "|---|---|---|---|---|---|"]
    for c in r["promotions"]:
        acc = ", ".join(f"{k} {v:.3f}" for k, v in c["accuracy"].items())
        L.append(f"| {c['candidate']} | {c['serving_before']} | {acc} | {c['pairs']} | {c['promoted']} | {c['reason']} |")
    L += ["", f"{r['requests_per_phase']} requests per phase: one decision is {100 / r['requests_per_phase']:.1f} points.",
          "", "![accuracy and latency per phase](demo.png)"]
    return "\n".join(L) + "\n"


DEMO_FLAGS = ("users", "turns", "phases", "requests", "rate", "max_seq_length", "workers", "train_steps",
              "train_after_feedback", "seed", "ship_users", "ship_steps")


def promotions(cycles: list[dict]) -> list[dict]:
    """Per trainer cycle: candidate, serving model and counting judged on the same fresh pairs, and the decision."""
    out = []
    for c in cycles:
        v = c.get("verdict") or {}
        new = (v.get("tests") or {}).get("candidate_vs_serving_unlearned")  # pairs with LLMs serving never learned
        out.append({"candidate": c.get("candidate_version"), "serving_before": c.get("serving_version") or "count",
                    "accuracy": v.get("accuracy", {}), "pairs": v.get("pairs", 0), "promoted": c.get("promoted"),
                    "demoted": c.get("demoted", False), "serving_after": c.get("serving_after"),
                    "reason": c.get("reason"), "trigger": c.get("trigger", ""),
                    "boosted": (c.get("window") or {}).get("boosted", []), "route": v.get("route", ""),
                    "unlearned_pairs": v.get("unlearned_pairs", 0), "offsets": c.get("offsets") or {},
                    "unlearned_accuracy": ({"candidate": new["accuracy_a"], "serving": new["accuracy_b"]}
                                           if new else {})})
    return out


def _evaluate(p, client, store, trainer_log, requests, util, global_best, llm_ids, published, seconds,
              rate: float, counts: PublishedCounts) -> Phase:
    """Route the evaluation requests at a steady ``rate`` per second and score every decision."""
    t0 = time.monotonic()
    sent: dict[int, float] = {}
    done: dict[int, float] = {}
    futs = []
    for i, r in enumerate(requests):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        sent[i] = time.perf_counter()
        f = client.route_async(r.user_id, r.query)
        f.add_done_callback(lambda _, i=i: done.__setitem__(i, time.perf_counter()))  # when the reply arrived
        futs.append((i, f))
    lat, hits, ratio, errors, fallbacks, versions = [], [], [], 0, 0, set()
    index = {m: j for j, m in enumerate(llm_ids)}
    count_hits = [index[m] == int(np.argmax(u)) for m, u in zip(counts.choose([r.user_id for r in requests]), util)]
    for i, f in futs:
        d = f.result(timeout=120)
        lat.append((done.get(i, time.perf_counter()) - sent[i]) * 1000)
        if d.error or d.chosen_llm_id not in index:
            errors += 1
            continue
        fallbacks += d.fallback
        versions.add(d.scorer or "-")
        u = util[i]
        j = index[d.chosen_llm_id]
        hits.append(j == int(np.argmax(u)))
        lo = u.min()
        ratio.append((u[j] - lo) / max(u.max() - lo, 1e-9))
    gb = float(np.mean(np.argmax(util, 1) == global_best))
    answered = ",".join(sorted(str(v) for v in versions))
    return Phase(p, published, store.count("Turn"), answered, len(futs),
                 errors, fallbacks, float(np.mean(hits)) if hits else 0.0, float(np.mean(count_hits)), answered, gb,
                 float(np.mean(ratio)) if ratio else 0.0, float(np.percentile(lat, 50)),
                 float(np.percentile(lat, 99)), seconds + time.monotonic() - t0,
                 {"trainer_cycles": len(trainer_log.history())})


def _table(phases: list[Phase], global_best: str):
    from rich.table import Table

    t = Table(title="routing accuracy against the simulated users' true best LLM")
    for col in ("phase", "events in", "turns in graph", "scorer", "decisions", "fallback", "accuracy",
                "per-user count", f"always {global_best}", "utility ratio", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for p in phases:
        t.add_row(str(p.phase), f"{p.events_published:,}", f"{p.turns_in_graph:,}", p.scorer or "-",
                  str(p.decisions), str(p.fallbacks), f"{p.accuracy:.3f}", f"{p.per_user_accuracy:.3f}",
                  f"{p.global_best_accuracy:.3f}",
                  f"{p.mean_utility_ratio:.3f}", f"{p.p50_ms:.1f}", f"{p.p99_ms:.1f}")
    return t


def _plot(phases: list[Phase], global_best: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p.events_published for p in phases]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(x, [p.accuracy for p in phases], "o-", label="prefstream (what served)")
    a.plot(x, [p.per_user_accuracy for p in phases], "^:", label="per-user win count, same events")
    a.plot(x, [p.global_best_accuracy for p in phases], "s--", label=f"always {global_best}")
    a.set_xlabel("chat + feedback events streamed")
    a.set_ylabel("top-1 accuracy vs true best LLM")
    a.set_ylim(0, 1)
    a.legend()
    b.plot(x, [p.p50_ms for p in phases], "o-", label="p50")
    b.plot(x, [p.p99_ms for p in phases], "s-", label="p99")
    b.set_xlabel("chat + feedback events streamed")
    b.set_ylabel("request -> decision round trip (ms)")
    b.legend()
    fig.suptitle("prefstream demo")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on a local stack",
                       description="Bring up the local stack, stream simulated users' chats and feedback through "
                                   "Kafka, route their new requests through the Ray workers while the periodic "
                                   "trainer learns, and report accuracy against the users' true preferences.")
    add_stack_options(p)
    p.add_argument("--users", type=int, default=30, help="simulated users")
    p.add_argument("--turns", type=int, default=15, help="user turns per simulated user (about)")
    p.add_argument("--phases", type=int, default=3, help="slices of history streamed between evaluations")
    p.add_argument("--requests", type=int, default=60, help="evaluation requests routed after each phase")
    p.add_argument("--max-seq-length", type=int, default=128, help="encoder tokens per text")
    p.add_argument("--rate", type=float, default=20.0, help="evaluation requests per second")
    p.add_argument("--workers", type=int, default=1, help="Ray router workers")
    p.add_argument("--train-steps", type=int, default=60, help="optimizer steps per trainer cycle")
    p.add_argument("--train-after-feedback", type=int, default=200, help="trainer cycle after this many feedback events")
    p.add_argument("--train-wait", type=float, default=240, help="seconds to wait for a trainer cycle per phase")
    p.add_argument("--ship-users", type=int, default=0,
                   help="first train a model on this many other simulated users and serve it from the start, as a "
                        "deployment ships one (0: counting serves until a trained candidate beats it)")
    p.add_argument("--ship-steps", type=int, default=600, help="training steps of the shipped model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="var/demo", help="where results, plot and models go")
    p.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    p.set_defaults(func=run_demo, no_ray=False)
