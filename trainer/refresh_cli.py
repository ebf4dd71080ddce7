"""`prefstream train`: one refresh cycle (--once), the periodic Ray trainer, or the cycle history."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from prefstream.config import Settings
from prefstream.options import add_stack_options, settings_from


def refresh_config(s: Settings):
    from trainer.refresh import RefreshConfig

    return RefreshConfig(window_minutes=s.trainer_window_minutes, users=s.trainer_users, k=s.history_turns,
                         max_targets=s.trainer_max_targets, check_users=s.trainer_check_users,
                         window_cuts=s.trainer_window_cuts,
                         steps=s.trainer_steps, min_pairs=s.trainer_min_pairs,
                         min_new_pairs=s.trainer_min_new_pairs, alpha=s.trainer_alpha,
                         new_llm_games=s.trainer_new_llm_games, warm_lr=s.trainer_warm_lr,
                         anchor=s.trainer_anchor, offsets=s.trainer_offsets, watch=s.trainer_watch)


def run_cycle(s: Settings, progress: bool = False, trigger: str = "manual") -> dict:
    """One cycle against the configured graph store and model registry (also the body of the Ray task);
    ``trigger`` (why it runs) goes into its record. It trains on the graph's query vectors and labels the candidate
    with this deployment's encoder space, so on a graph of another space it refuses (EmbeddingSpaceMismatch)."""
    from dataclasses import asdict

    from graphstore import open_store
    from prefstream.encoder import TextEncoder, embedding_space
    from trainer.refresh import RefreshTrainer

    store = open_store(s)
    try:
        store.claim_embedding_space(embedding_space(s.encoder, s.encoder_backend),
                                    lambda texts: TextEncoder.from_settings(s).encode(texts))  # built if needed
        return asdict(RefreshTrainer(store, s.model_dir, refresh_config(s)).run_cycle(progress=progress,
                                                                                     trigger=trigger))
    finally:
        store.close()


class Recount(NamedTuple):
    """What one recount did (``recount``)."""

    pairs: int  # pairwise games counted
    new: list[str]  # LLMs due an early cycle (refresh.new_llms)
    offsets: dict | None  # the level offsets' fit (RefreshTrainer.recalibrate; None: none was due)
    watch: dict | None  # the live watch's state (RefreshTrainer.watch; None: off, or counting serves)


def recount(s: Settings) -> Recount:
    """Refresh the count-based scorer's global rates from the graph (no training), the serving model's level
    offsets when due (RefreshTrainer.recalibrate), and the live watch of the serving model against counting as
    routers had it until now (RefreshTrainer.watch). The LLMs due are those with ``trainer_new_llm_games`` games
    that the last cycle had fewer of and the serving model trained on fewer of (refresh.new_llms)."""
    from graphstore import open_store
    from trainer.count_scorer import CountScorer
    from trainer.refresh import RefreshTrainer, new_llms

    store = open_store(s)
    try:
        trainer = RefreshTrainer(store, s.model_dir, refresh_config(s))
        served = CountScorer.load(s.model_dir)  # the global rates routers counted with since the last recount
        counted = trainer.recount_scorer()
        last = trainer.last_cycle()
        due = new_llms(counted.games, last, s.trainer_new_llm_games)
        if due:  # only those the serving model has not learned (its checkpoint is read only then)
            due = new_llms(counted.games, last, s.trainer_new_llm_games, trainer.serving_seen())
        offsets = trainer.recalibrate(counted.games)
        return Recount(counted.pairs, due, offsets, trainer.watch(served))
    finally:
        store.close()


def feedback_count(s: Settings) -> int:
    from graphstore import open_store

    store = open_store(s)
    try:
        return store.count("Feedback")
    finally:
        store.close()


def count_cycle(rec: dict | None) -> str:
    """Prometheus: one finished cycle by outcome (None: it failed); returns the outcome."""
    from prefstream.metrics import metrics

    m = metrics()
    if rec is None:
        outcome = "failed"
    else:
        outcome = ("promoted" if rec.get("promoted") else "demoted" if rec.get("demoted")
                   else "refused" if rec.get("candidate_version") else "skipped")
    m.trainer_cycles.labels(outcome).inc()
    if outcome == "promoted":
        m.trainer_promotions.inc()
    m.trainer_last_cycle.set(time.time())
    if rec is not None:
        m.trainer_counts_rebuilt.inc(rec["window"].get("counts", {}).get("rebuilt", 0))
    return outcome


def cycle_trigger(s: Settings, new: list[str], new_feedback: int, idle_s: float) -> str:
    """Why the periodic trainer runs a cycle now ("" if it does not): LLMs that reached ``trainer_new_llm_games``
    since the last cycle (``new``, from recount), ``new_feedback`` events since it, or ``idle_s`` seconds."""
    if new:
        return "new LLMs: " + ", ".join(new)
    if new_feedback >= s.trainer_after_feedback:
        return "feedback"
    return "schedule" if idle_s >= s.trainer_every_minutes * 60 else ""


@dataclass
class Cadence:
    """When the periodic trainer runs a cycle or a recount; the loop polls it with the feedback count."""

    last_at: float = 0.0  # when the last cycle ended (0: none yet)
    last_fb: int = 0  # the feedback count when the last cycle started
    counted_fb: int = 0  # ...or the last recount
    new: list[str] = field(default_factory=list)  # the LLMs the last recount found due (refresh.new_llms)
    running: bool = False  # a cycle runs

    def poll(self, s: Settings, fb: int, now: float) -> tuple[str, str]:
        """("cycle", its trigger), ("recount", "") or ("", ""): one cycle at a time (cycle_trigger), and between
        and during cycles a recount every ``trainer_count_after_feedback`` events; the state follows the answer."""
        trigger = "" if self.running else cycle_trigger(s, self.new, fb - self.last_fb, now - self.last_at)
        if trigger and fb > 0:
            self.last_fb = self.counted_fb = fb  # a cycle also recounts the rates
            self.running = True
            return "cycle", trigger
        if fb - self.counted_fb >= s.trainer_count_after_feedback:
            self.counted_fb = fb
            return "recount", ""
        return "", ""

    def found(self, new: list[str]) -> None:
        """A recount's due LLMs; none while a cycle runs: it logs the games it counted itself."""
        self.new = [] if self.running else new

    def finished(self, now: float) -> None:
        self.last_at, self.new, self.running = now, [], False


def periodic(s: Settings, on_ready=None) -> None:
    """Run a cycle as a Ray task every N minutes, or sooner after M new feedback events, or as soon as a recount
    finds an LLM with its first ``trainer_new_llm_games`` games since the last cycle. Recounts (global rates and
    level offsets) go on every ``trainer_count_after_feedback`` events, also while a cycle runs (Cadence)."""
    from prefstream.metrics import metrics_port_for, serve_metrics
    from prefstream.ray_env import init_ray

    serve_metrics(metrics_port_for(s.metrics_port, "trainer"))
    ray = init_ray(s.ray_address)
    task = ray.remote(num_cpus=1, max_retries=1)(run_cycle)
    log = logging.getLogger("prefstream.trainer")
    if on_ready is not None:
        on_ready()
    cadence, cycle = Cadence(), None  # cycle: the running cycle's ObjectRef
    while True:
        try:
            fb = feedback_count(s)
        except Exception as exc:  # graph store down: try again later
            log.warning("trainer cannot read the graph store: %s", exc)
            time.sleep(10)
            continue
        if cycle is not None and ray.wait([cycle], timeout=0)[0]:
            finish_cycle(ray, cycle, log)
            cycle = None
            cadence.finished(time.time())
        what, trigger = cadence.poll(s, fb, time.time())
        if what == "cycle":
            cycle = task.remote(s, False, trigger)
        elif what == "recount":
            cadence.found(recount_logged(s, log))
            if cadence.new:
                log.warning("new LLMs with %d games since the last cycle, refreshing now: %s",
                            s.trainer_new_llm_games, ", ".join(cadence.new))
        time.sleep(5)


def finish_cycle(ray, cycle, log: logging.Logger) -> None:
    """Collect a finished cycle's record (or its failure): metrics and a log line."""
    try:
        rec = ray.get(cycle)
        count_cycle(rec)
        log.warning("trainer cycle: serving %s -> candidate %s promoted=%s (%s)", rec["serving_version"],
                    rec["candidate_version"], rec["promoted"], rec["reason"])
        if (counts := rec["window"].get("counts") or {}).get("rebuilt"):
            log.warning("trainer cycle rebuilt the kept win counts of %d of %d users checked: %s", counts["rebuilt"],
                        counts["users"], ", ".join(counts["rebuilt_ids"]))
    except Exception as exc:
        count_cycle(None)
        log.error("trainer cycle failed: %s", exc)


def recount_logged(s: Settings, log: logging.Logger) -> list[str]:
    """recount, logged; the new LLMs it found ([] when it failed)."""
    try:
        done = recount(s)
    except Exception as exc:
        log.error("recount failed: %s", exc)
        return []
    log.info("recounted the global win rates over %d comparisons", done.pairs)
    if (offsets := done.offsets) is not None:
        log.warning("level offsets: %s %s (%s on %d fresh pairs: %s; written=%s)", offsets["chosen"],
                    offsets["offsets"], offsets["criterion"], offsets["fresh_pairs"], offsets["fresh_scores"],
                    offsets["written"])
    if done.watch is not None:
        export_watch(done.watch)
        if done.watch["checks"]:
            log.info("live watch of %s: %s", done.watch["version"], done.watch["reason"])
    return done.new


def export_watch(watch: dict) -> None:
    """Prometheus: the live watch's tally (trainer/watch.py)."""
    from prefstream.metrics import metrics

    g = metrics().trainer_watch
    g.labels("pairs").set(watch["pairs"])
    g.labels("log_evidence").set(watch["log_evidence"])
    for k, v in watch["accuracy"].items():
        g.labels(f"{k}_accuracy").set(v)


def promoted_cell(record: dict) -> str:
    """"yes", "yes, on new LLMs" (the judge's route for LLMs the serving model never learned), "demoted" or "no"."""
    if record["promoted"]:
        return "yes, on new LLMs" if (record.get("verdict") or {}).get("route") == "unlearned LLMs" else "yes"
    return "demoted" if record.get("demoted") else "no"


def counts_cell(counts: dict | None) -> str:
    """A cycle's check of the kept counts (RefreshTrainer.check_counts): "rebuilt / checked users", "failed", or
    "-" when it did not check."""
    if not counts:
        return "-"
    return "failed" if "error" in counts else f"{counts['rebuilt']}/{counts['users']}"


def print_history(s: Settings, as_json: bool) -> None:
    from trainer.refresh import RefreshTrainer

    rows = RefreshTrainer(None, s.model_dir).history()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"trainer cycles in {s.model_dir}")
    for col in ("started (UTC)", "trigger", "serving", "candidate", "promoted", "train/eval targets", "boosted",
                "cand AUC", "serv AUC", "counts rebuilt", "s"):
        t.add_column(col)
    for r in rows:
        w, cm, sm = r["window"], r["candidate_metrics"], r["serving_metrics"]
        t.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["cycle_started"])), r.get("trigger") or "-",
                  str(r["serving_version"]), str(r["candidate_version"]), promoted_cell(r),
                  f"{w.get('train_targets', 0)}/{w.get('eval_targets', 0)}", ", ".join(w.get("boosted", [])) or "-",
                  f"{cm['auc']:.4f}" if "auc" in cm else "-", f"{sm['auc']:.4f}" if "auc" in sm else "-",
                  counts_cell(w.get("counts")), f"{r['seconds']:.1f}")
    Console().print(t)
    from trainer.watch import read_watch

    watch = read_watch(s.model_dir)
    if watch is not None:
        Console().print(f"live watch of {watch.version}: {watch.reason or 'nothing counted yet'}")


def cmd_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = settings_from(args)
    if args.history:
        print_history(s, args.json)
        return 0
    if args.once:
        rec = run_cycle(s, progress=True)
        print(json.dumps(rec, indent=2, default=float) if args.json else
              f"cycle: serving {rec['serving_version']} -> candidate {rec['candidate_version']}: "
              f"{'PROMOTED' if rec['promoted'] else 'not promoted'} ({rec['reason']})")
        return 0
    from prefstream.ready import ready_callback

    periodic(s, ready_callback(s, args.ready_name))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="refresh the shared weights from recent feedback (periodic Ray trainer)",
                       description="Sample recent users' subgraphs, warm-start from the serving model, train, "
                                   "evaluate prequentially on the newest feedback and promote only if not worse. "
                                   "Without --once, runs every PREFSTREAM_TRAINER_EVERY_MINUTES or after "
                                   "PREFSTREAM_TRAINER_AFTER_FEEDBACK new feedback events.")
    add_stack_options(p)
    p.add_argument("--once", action="store_true", help="run one cycle now and exit")
    p.add_argument("--history", action="store_true", help="show every recorded cycle and exit")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--ready-name", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)
