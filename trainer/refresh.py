"""The periodic trainer: refresh the shared weights from recent feedback, promote only if not worse.

One cycle (prequential):
1. cutoff T = the time before which the newest ``eval_fraction`` of recent turns begin;
2. sample recent users' histories from the graph store (time-respecting samples, see graphstore.sampler);
   targets before T train; the sampled users' comparisons at or after T are judged, each once with the history a
   router serving it reads (``served_evals``): training never sees the feedback it is judged on;
3. warm-start from the serving version and train;
4. count the global win rates of the count-based scorer on the training side (to judge) and, for serving,
   over every recent comparison (``recount``, also run between cycles);
5. judge the candidate, the serving model and the count-based scorer on the same newest targets
   (trainer/promotion.py): promote the candidate only if it is significantly better than both on enough
   pairs; demote a serving model that is significantly worse than counting (unless the live watch has it ahead
   over everything since it began serving); publish the candidate either way;
   when the serving model stays and some LLM has feedback that it never learned, fit that LLM's level offset
   from its scores (``calibrate``, trainer/calibration.py) for the routers to add; the serving model is judged
   with the offsets the routers add to it;
6. append the cycle (versions, data window, metrics, verdict, what serves now) to ``<model_dir>/cycles.jsonl``.

Between cycles, every recount also refits those offsets once the unlearned LLMs' games have grown enough
(``recalibrate``), from the serving model's scores of their recent comparisons as routers served them, and adds the
newest comparisons to the live watch of the serving model against counting (``watch``, trainer/watch.py), which
demotes it as soon as the evidence pooled since it began serving says it is behind.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np

from graphstore.schema import TrainingSample
from prefstream.config import Settings
from trainer.crowd import CrowdTable

log = logging.getLogger(__name__)

CYCLES_FILE = "cycles.jsonl"
MAX_LOGGED = 20  # check_counts: the most user ids a cycle's record and log line name
MAX_COPIES = 10  # boosted: the most times one sample is in the list
NEW_LLM_SHARE = 0.1  # boosted: the share of the list the boosted samples are brought to


def setting(name: str):
    """The default of the ``PREFSTREAM_TRAINER_*`` setting ``trainer_<name>`` (prefstream.config.Settings), which a
    cycle configured without settings (RefreshConfig) uses too: one place for each default."""
    return Settings.model_fields[f"trainer_{name}"].default


# refit: the peak learning rate from a serving model, training's own. Lower rates scored better on a cycle's fresh
# pairs (bench/results/refresh_anchor.md) but did not serve the later live decisions better (online_new_llm_lr*.md)
WARM_LR = setting("warm_lr")
# refit: TrainConfig.anchor from a serving model, the pull of every weight back to the serving model's. On the same
# samples and fresh pairs its candidates scored better than without it, keeping the other LLMs' pairs while a cycle
# learned a new LLM (bench/results/refresh_anchor.md); live, none was promoted (online_new_llm_*anchor*.md)
WARM_ANCHOR = setting("anchor")


def refit_config(steps: int, seed: int = 0, serving=None, warm_lr: float = WARM_LR, anchor: float = WARM_ANCHOR):
    """The TrainConfig of a cycle's training: ``steps`` steps validated every quarter; from the ``serving`` model,
    its configuration at peak learning rate ``warm_lr`` (PREFSTREAM_TRAINER_WARM_LR), each weight pulled back
    towards the serving model's by ``anchor`` (TrainConfig.anchor, PREFSTREAM_TRAINER_ANCHOR); without one,
    training's defaults."""
    from trainer.train import TrainConfig

    tcfg = TrainConfig(steps=steps, seed=seed, eval_every=max(steps // 4, 1))
    return replace(tcfg, model=serving.cfg, lr=warm_lr, anchor=anchor) if serving is not None else tcfg


def refit(train: list[TrainingSample], steps: int, seed: int = 0, serving=None, llms=None, progress: bool = False,
          boost: Collection[str] = (), share: float = NEW_LLM_SHARE, warm_lr: float = WARM_LR,
          anchor: float = WARM_ANCHOR):
    """Step 3 of a cycle: ``steps`` training steps on ``train`` from the ``serving`` model's weights (refit_config;
    the defaults from scratch without one), validating every quarter of the steps on the first fifth
    of ``train`` (training-side targets only: the evaluation set stays unseen). The samples that compare an LLM
    in ``boost`` are drawn as if they were ``share`` of ``train`` (boosted). Returns trainer.train's FitResult."""
    from trainer.train import fit

    return fit(boosted(train, boost, share), train[: max(1, len(train) // 5)],
               refit_config(steps, seed, serving, warm_lr, anchor), init=serving, progress=progress, llms=llms)


def comparing(samples: Sequence[TrainingSample], llms: Collection[str]) -> list[TrainingSample]:
    """The samples with a target that compares one of ``llms``."""
    return [s for s in samples if any(m in llms for g in s.targets for m in g.llm_ids)]


def boosted(train: list[TrainingSample], llms: Collection[str], share: float,
            max_copies: int = MAX_COPIES) -> list[TrainingSample]:
    """``train``, then repeats of its samples with a target that compares one of ``llms``, so those samples make
    up about ``share`` of the list (each at least once: none is dropped, nothing else is repeated), each drawn
    ``max_copies`` times at most. A refresh draws its batches uniformly from the list, so an LLM with a few
    hundred games among hundreds of thousands still moves the shared weights (bench/results/new_llm_refresh.md).
    The cap keeps a handful of samples from being learned by heart."""
    if not llms:
        return train
    hit = comparing(train, llms)
    rest = len(train) - len(hit)
    if not hit or not rest:
        return train
    times = int(np.ceil(share * rest / ((1.0 - share) * len(hit))))
    return train + hit * (min(times, max_copies) - 1)


def unlearned(games: Mapping[str, float], seen: Mapping[str, float], n: float) -> list[str]:
    """LLMs with feedback now (``games``: CountScorer.games) that the serving model trained on fewer than ``n``
    games of (``seen``: seen_games): typically an LLM registered after it. A cycle boosts their samples."""
    return sorted(m for m, g in games.items() if g > 0 and seen.get(m, 0.0) < n)


@functools.lru_cache(maxsize=2)
def serving_checkpoint(path: str):
    """load_checkpoint of a published version's file, kept: a version's checkpoint never changes, and the periodic
    trainer asks for the serving one at every recount (recalibrate)."""
    from trainer.checkpoint import load_checkpoint

    return load_checkpoint(path)


def seen_games(checkpoint) -> dict[str, float]:
    """Per LLM, the games a checkpoint's model had when it was trained: what its cycle logged
    (``window.llm_games``), or what `prefstream fit` counted in its training files (``llm_games``, trained_games).
    A checkpoint with neither (written before they were logged) counts every LLM of its catalog as fully seen."""
    metrics = checkpoint.metrics or {}
    logged = metrics.get("window", {}).get("llm_games", metrics.get("llm_games"))
    return dict(logged) if logged is not None else {m: float("inf") for m in checkpoint.llm_catalog}


def trained_games(samples: Sequence[TrainingSample], init=None) -> dict[str, float]:
    """Per LLM, the pairwise games in ``samples`` (each comparison once, as the count-based scorer counts them),
    plus those of ``init`` (a checkpoint the training continued from, seen_games): what `prefstream fit` logs as
    its checkpoint's ``llm_games``, so a cycle knows which LLMs the model never saw (unlearned)."""
    from trainer.count_scorer import CountScorer

    games = dict(CountScorer.counted(samples).games)
    for m, g in (seen_games(init) if init is not None else {}).items():
        games[m] = games.get(m, 0.0) + g
    return games


def new_llms(games: dict[str, float], last_cycle: dict | None, n: float,
             seen: Mapping[str, float] | None = None) -> list[str]:
    """LLMs with at least ``n`` pairwise games now (``games``: the count-based scorer's, CountScorer.games) that
    had fewer when the ``last_cycle`` (a cycles.jsonl record) ran, and that the serving model trained on fewer
    than ``n`` games of (``seen``: seen_games; None when no model serves): typically an LLM registered since, whose
    first feedback no model has trained on. The periodic trainer refreshes early for them. Empty before the first
    cycle, or when the last record has no counts: the regular cadence runs the first cycle."""
    before = (last_cycle or {}).get("window", {}).get("llm_games")
    if before is None:
        return []
    return sorted(m for m, g in games.items()
                  if g >= n and before.get(m, 0.0) < n and (seen is None or seen.get(m, 0.0) < n))


@dataclass
class RefreshConfig:
    # each default with a PREFSTREAM_TRAINER_* setting is that setting's (``setting``)
    window_minutes: float = setting("window_minutes")  # users active within this window (before the newest turn)
    users: int = setting("users")  # samples drawn per cycle
    max_targets: int = setting("max_targets")  # comparisons after a sample's cut it trains on, at most
    window_cuts: bool = setting("window_cuts")  # each sample's cut in the window (False: anywhere in its history)
    check_users: int = setting("check_users")  # users whose kept win counts a cycle checks (check_counts; 0: off)
    k: int = 10  # visible turns per sample (the settings' history_turns when built from them)
    eval_fraction: float = 0.2  # newest share of turns held out for the prequential evaluation
    steps: int = setting("steps")
    min_pairs: int = setting("min_pairs")  # fewest fresh comparison pairs a promotion (or demotion) is decided on
    min_new_pairs: int = setting("min_new_pairs")  # ...or with LLMs the serving model never learned (0: off)
    new_llm_games: int = setting("new_llm_games")  # an LLM serving trained on fewer games of is boosted (unlearned)...
    new_llm_share: float = NEW_LLM_SHARE  # ...to this share of the training samples (boosted)
    warm_lr: float = WARM_LR  # peak learning rate of a refresh from the serving model (refit_config)
    anchor: float = WARM_ANCHOR  # its pull of every weight back to the serving model's (TrainConfig.anchor)
    alpha: float = setting("alpha")  # one-sided sign-test level
    offsets: bool = setting("offsets")  # fit level offsets for the LLMs the serving model never learned (calibrate)
    watch: bool = setting("watch")  # at each recount, test the serving model against counting since it began (watch)
    # the judge scores every fresh comparison of the sampled users with the history a router serving it reads
    # (GraphStore.serving_samples); False: the training samples' later targets, whose history ends at the sample's
    # random cut, often many turns before them
    served_evals: bool = True
    seed: int = 0


@dataclass
class CycleRecord:
    cycle_started: float
    serving_version: str | None
    candidate_version: str | None
    promoted: bool
    reason: str
    window: dict = field(default_factory=dict)
    candidate_metrics: dict = field(default_factory=dict)
    serving_metrics: dict = field(default_factory=dict)
    count_metrics: dict = field(default_factory=dict)
    verdict: dict = field(default_factory=dict)  # trainer/promotion.py Verdict
    demoted: bool = False
    serving_after: str = "count"  # the model version serving after this cycle, or "count"
    seconds: float = 0.0
    trigger: str = ""  # why it ran: "schedule", "feedback", "new LLMs: ...", "manual" (empty: not said)
    offsets: dict = field(default_factory=dict)  # level offsets fitted for the serving model (calibrate)


def check_slice(users: Sequence[str], n: int, cycle: int) -> list[str]:
    """The users a cycle checks the kept counts of: slice number ``cycle`` of ``n`` of ``users`` sorted by id,
    wrapping around, so successive cycles check every user of a steady window in turn (all of them when ``n``
    covers the window; none when ``n`` is 0)."""
    ids = sorted(set(users))
    if n <= 0 or not ids:
        return []
    if n >= len(ids):
        return ids
    start = (cycle * n) % len(ids)
    return (ids + ids)[start:start + n]


def prequential_cutoff(stamps: Sequence[int], eval_fraction: float) -> int:
    """The time before which all but the newest ``eval_fraction`` of ``stamps`` (not empty) lie: the targets at or
    after it are a cycle's fresh side."""
    stamps = sorted(stamps)
    return int(stamps[min(len(stamps) - 1, int(len(stamps) * (1 - eval_fraction)))])


def split_prequential(samples: list[TrainingSample], cutoff_ms: int) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Targets before the cutoff train; targets at or after it evaluate (same visible history)."""
    train, evals = [], []
    for s in samples:
        before = [g for g in s.targets if g.timestamp < cutoff_ms]
        after = [g for g in s.targets if g.timestamp >= cutoff_ms]
        if before:
            train.append(TrainingSample(s.visible, before))
        if after:
            evals.append(TrainingSample(s.visible, after))
    return train, evals


class RefreshTrainer:
    def __init__(self, store, model_dir: Path | str, config: RefreshConfig | None = None):
        from trainer.registry import ModelRegistry

        self.store = store
        self.registry = ModelRegistry(model_dir)
        self.cfg = config or RefreshConfig()
        self.cycles_path = Path(model_dir) / CYCLES_FILE

    # --- data --------------------------------------------------------------------------------
    def sample(self, seed: int, active: tuple[int, list[tuple[str, int]]] | None = None,
               ) -> tuple[list[TrainingSample], list[TrainingSample], dict]:
        """(training samples, fresh samples, what was drawn) from the users active in the window (``active``:
        :meth:`active_window`, read here when None)."""
        since, users = active or self.active_window()
        samples: list[TrainingSample] = []
        rng = np.random.default_rng(seed)
        read: dict = {}  # the users' possible targets, read by the first pass only
        for _ in range(3):  # each pass draws one random cut per user (in the window); a few passes give more targets
            samples += self.store.sample_training(self.cfg.users, self.cfg.k, since_ms=since, seed=rng,
                                                  max_targets=self.cfg.max_targets,
                                                  cuts_since=since if self.cfg.window_cuts else None, comparisons=read)
        if not any(s.targets for s in samples):
            return [], [], {"since_ms": since, "users": len(users), "samples": 0}
        cutoff = self.cutoff([g for s in samples for g in s.targets])
        train, evals = split_prequential(samples, cutoff)
        if self.cfg.served_evals:  # each fresh comparison with the history before it, as a router reads it
            evals = self.store.serving_samples(sorted({s.visible.user_id for s in samples}), self.cfg.k, cutoff)
        # other users' ratings of the same query, as known before the cutoff (the judged side sees no later ones)
        CrowdTable.from_samples(samples, before_ms=cutoff).attach(g for s in train + evals for g in s.targets)
        window = {"since_ms": since, "cutoff_ms": cutoff, "users": len(users), "samples": len(samples),
                  "train_samples": len(train), "eval_samples": len(evals),
                  "train_targets": sum(len(s.targets) for s in train),
                  "eval_targets": sum(len(s.targets) for s in evals)}
        return train, evals, window

    def serving_seen(self) -> dict[str, float] | None:
        """seen_games of the serving version (None when counting serves)."""
        version = self.registry.current()
        return seen_games(serving_checkpoint(str(self.registry.path(version)))) if version else None

    def since_ms(self) -> int:
        """The start of the window: users active after it are sampled and counted (relative to the newest turn in
        the store, so replayed history works the same as live)."""
        return self.active_window()[0]

    def active_window(self) -> tuple[int, list[tuple[str, int]]]:
        """(since_ms, the users with a turn at or after it as GraphStore.active_users gives them, most recent first),
        from one read of every user's newest turn."""
        everyone = self.store.active_users(None)  # most recent first
        since = (everyone[0][1] if everyone else 0) - int(self.cfg.window_minutes * 60_000)
        return since, [(u, t) for u, t in everyone if t >= since]

    def check_counts(self, users: Sequence[str], cycle: int) -> dict:
        """Check the kept win counts of cycle ``cycle``'s slice of ``users`` (check_slice) against their stored
        ratings (graphstore.count_check), and rebuild the users that differ on a second read too: a write between
        its rating and its recount makes a user differ for a moment, a recount the graph server lost makes them
        differ until rebuilt. What it found, for the cycle's record ({} when off); a failed check is logged and
        recorded, and the cycle goes on."""
        from graphstore.count_check import check_win_counts

        ids = check_slice(users, self.cfg.check_users, cycle)
        if not ids:
            return {}
        try:
            first = check_win_counts(self.store, ids)
            off = [c.user_id for c in first.off]
            again = check_win_counts(self.store, off, repair=True)  # no user: no read
        except Exception as exc:  # maintenance: the cycle trains and judges without it
            log.warning("checking the kept win counts failed: %s", exc)
            return {"users": len(ids), "error": str(exc)}
        rebuilt = again.repaired
        if rebuilt:
            log.warning("rebuilt the kept win counts of %d users that differed from their ratings: %s",
                        len(rebuilt), ", ".join(rebuilt[:MAX_LOGGED]))
        return {"users": first.users, "answers": first.answers, "differed": len(off), "rebuilt": len(rebuilt),
                "rebuilt_ids": rebuilt[:MAX_LOGGED], "still_off": again.still_off[:MAX_LOGGED]}

    def cutoff(self, targets: Sequence) -> int:
        """prequential_cutoff of ``targets`` (with .timestamp) at the configured ``eval_fraction``."""
        return prequential_cutoff([g.timestamp for g in targets], self.cfg.eval_fraction)

    def recount(self) -> int:
        """The pairwise games counted (recount_scorer)."""
        return self.recount_scorer().pairs

    def recount_scorer(self, since_ms: int | None = None):
        """Count the count-based scorer's global win rates afresh (no training), save them, and return the
        CountScorer. The whole past of the ``users`` most recently active users (within the window: from
        ``since_ms``, read from the store when None), read as the routers read it (GraphStore.global_win_counts), so
        the file and a router's own recount agree. Cheap next to a cycle, so the periodic trainer runs it after
        every few dozen feedback events."""
        from trainer.count_scorer import CountScorer

        since = self.since_ms() if since_ms is None else since_ms
        counted = CountScorer.from_counts(self.store.global_win_counts(self.cfg.users, since))
        if counted.pairs:
            counted.save(self.registry.root)
        return counted

    # --- one cycle ---------------------------------------------------------------------------
    def run_cycle(self, candidate=None, progress: bool = False, serving=None, trigger: str = "") -> CycleRecord:
        """One refresh. ``candidate`` (a model) skips training and judges that model instead; ``serving`` (a
        model) stands in for the registry's CURRENT version when judging; ``trigger`` is logged with it."""
        from trainer.calibration import apply_offsets, load_offsets
        from trainer.count_scorer import CountScorer
        from trainer.metrics import pair_metrics
        from trainer.promotion import judge, pair_correct, pair_has
        from trainer.train import llm_table, score_samples

        t0 = time.time()
        serving_version = self.registry.current()
        seen = None  # what the serving model trained on, per LLM (unknown for a ``serving`` given by the caller)
        offsets: dict[str, float] = {}  # the level offsets routers add to it (none for a caller's ``serving``)
        if serving is None and serving_version:
            ck = serving_checkpoint(str(self.registry.path(serving_version)))
            serving, seen = ck.model, seen_games(ck)
            offsets = load_offsets(self.registry.root, serving_version)
        llms = self.store.llm_catalog()
        active, cycle = self.active_window(), len(self.history())
        counts = self.check_counts([u for u, _ in active[1]], cycle)  # before the recount below reads them
        train, evals, window = self.sample(self.cfg.seed + cycle, active)
        record = CycleRecord(t0, serving_version, None, False, "", window, serving_after=serving_version or "count",
                             trigger=trigger)
        record.window["counts"] = counts
        # what counting serves from now on: every recent comparison, not only this sample; its per-LLM games are
        # logged so the periodic trainer can tell an LLM whose first feedback came after this cycle (new_llms)
        record.window["llm_games"] = self.recount_scorer(active[0]).games  # the window this cycle read
        boost = unlearned(record.window["llm_games"], seen, self.cfg.new_llm_games) if seen is not None else []
        record.window["boosted"] = boost
        if not evals or (candidate is None and not train):
            record.reason = "not enough feedback yet (no targets on one side of the cutoff)"
            return self._log(record, t0)
        if candidate is None:
            candidate = refit(train, self.cfg.steps, self.cfg.seed, serving, llms, progress, boost,
                              self.cfg.new_llm_share, self.cfg.warm_lr, self.cfg.anchor).model
        groups = [g for s in evals for g in s.targets]
        scored = {"candidate": score_samples(candidate, evals, llm_table(llms, candidate.cfg.llm_prices)),
                  "count": CountScorer.counted(train).score_samples(evals)}  # counting as it served before the cutoff
        if serving is not None:  # judged as the routers serve it: with its offsets
            base = score_samples(serving, evals, llm_table(llms, serving.cfg.llm_prices))
            scored["serving"] = [apply_offsets(s, g.llm_ids, offsets) for g, s in zip(groups, base)]
        metrics = {k: pair_metrics(groups, v) for k, v in scored.items()}
        record.candidate_metrics, record.count_metrics = metrics["candidate"], metrics["count"]
        record.serving_metrics = metrics.get("serving", {})
        correct = {k: pair_correct(groups, v) for k, v in scored.items()}
        verdict = judge(correct["candidate"], correct["count"], correct.get("serving"), min_pairs=self.cfg.min_pairs,
                        alpha=self.cfg.alpha, unlearned=pair_has(groups, boost) if boost else None,
                        min_new_pairs=self.cfg.min_new_pairs)
        record.verdict, record.promoted, record.reason = verdict.to_dict(), verdict.promote, verdict.reason
        if boost and serving_version and self.cfg.offsets and not verdict.promote and not verdict.demote:
            record.offsets = self.calibrate(serving, serving_version, train, groups, base, boost, llms, offsets,
                                            sum(record.window["llm_games"].get(m, 0.0) for m in boost))
        record.candidate_version = self.registry.publish(
            candidate, promote=verdict.promote, train_config=asdict(self.cfg),
            metrics={"prequential": record.candidate_metrics, "verdict": record.verdict, "window": window},
            llm_catalog=llms)
        if verdict.demote and not self.behind_overall(serving_version):
            record.reason += ("; not demoted: the live watch has it ahead of counting over the comparisons since it "
                              "began serving (trainer/watch.py)")
        elif verdict.demote:
            record.demoted = self.registry.demote(serving_version)  # unless the watch demoted it meanwhile
        record.serving_after = self.registry.current() or "count"
        return self._log(record, t0)

    def calibrate(self, serving, version: str, train: list[TrainingSample], groups: list, serving_scores: list,
                  fit: list[str], llms, current: dict[str, float], games: float) -> dict:
        """Level offsets for the LLMs ``fit`` that the serving model never learned (trainer/calibration.py): fitted
        on the serving model's scores of the training side of the cutoff; on the fresh pairs with those LLMs
        (``serving_scores``, without offsets) the fit, the offsets in force (``current``) and none compete, and
        the routers get the winner (a fit, fitted again on both sides). ``games``: those LLMs' games now
        (recalibrate's next fit waits for more)."""
        from trainer.calibration import calibrate
        from trainer.train import llm_table, score_samples

        hit = comparing(train, fit)
        train_scores = score_samples(serving, hit, llm_table(llms, serving.cfg.llm_prices)) if hit else []
        out = calibrate([g for s in hit for g in s.targets], train_scores, groups, serving_scores, fit, current)
        return self._save_offsets(version, out, groups, games, "cycle")

    def recalibrate(self, games: Mapping[str, float]) -> dict | None:
        """Between cycles (the periodic trainer calls it at each recount with the recount's ``games``): refit the
        serving model's level offsets for the LLMs it never learned once their games reach RECOUNT_MIN_GAMES, then
        RECOUNT_GROWTH times those at the last fit. Their recent comparisons as routers served them (each with the
        history before it, GraphStore.serving_samples) are scored by the serving model and split in time like a
        cycle's (``eval_fraction`` newest fresh); trainer.calibration.calibrate fits and checks. Returns its
        record with "written" (False: a fit on later feedback was there), or None when no fit was due."""
        from trainer.calibration import calibrate, load_offsets, read_offsets, recount_due

        version = self.registry.current()
        if not self.cfg.offsets or not version:
            return None
        ck = serving_checkpoint(str(self.registry.path(version)))
        fit = unlearned(games, seen_games(ck), self.cfg.new_llm_games)
        now = sum(games.get(m, 0.0) for m in fit)
        doc = read_offsets(self.registry.root)
        last = float(doc.get("games") or 0.0) if doc.get("version") == version else 0.0
        if not fit or not recount_due(now, last):
            return None
        groups, scores = self.served_comparisons(ck.model, fit)
        if not groups:
            return None
        cut = self.cutoff(groups)
        before = [i for i, g in enumerate(groups) if g.timestamp < cut]
        fresh = [i for i, g in enumerate(groups) if g.timestamp >= cut]
        out = calibrate([groups[i] for i in before], [scores[i] for i in before], [groups[i] for i in fresh],
                        [scores[i] for i in fresh], fit, load_offsets(self.registry.root, version))
        return self._save_offsets(version, out, groups, now, "recount")

    def served_comparisons(self, model, fit: Collection[str]) -> tuple[list, list[np.ndarray]]:
        """(groups, the model's scores of them without offsets): the recent comparisons with an LLM in ``fit`` of
        the ``users`` most recently active users, each with the history a router serving it read, in time order;
        crowd evidence as a cycle attaches it (the comparisons before the newest ``eval_fraction`` of them)."""
        from trainer.train import llm_table, score_samples

        since, active = self.active_window()
        users = [u for u, _ in active][: self.cfg.users]
        samples = sorted(self.store.serving_samples(users, self.cfg.k, since, llms=fit),
                         key=lambda s: s.targets[0].timestamp)
        if not samples:
            return [], []
        groups = [g for s in samples for g in s.targets]
        CrowdTable.from_samples(samples, before_ms=self.cutoff(groups)).attach(groups)
        return groups, score_samples(model, samples, llm_table(self.store.llm_catalog(), model.cfg.llm_prices))

    def watch(self, counting, serving=None) -> dict | None:
        """The live watch (trainer/watch.py), at a recount: score the comparisons of the users with news since
        their marks (the ``users`` most recently active of them), by the serving version (or the model ``serving``
        standing in for its checkpoint) and by ``counting`` (the CountScorer routers had), add them to the version's
        running test, and demote the version once it is significantly behind. Returns the watch's state, or None
        (off, or counting serves)."""
        from trainer.watch import WatchState, read_watch, save_watch

        t0 = time.time()
        version = self.registry.current()
        if not self.cfg.watch or not version:
            return None
        state = read_watch(self.registry.root)
        since, active = self.active_window()
        if state is None or state.version != version or state.demoted:  # a version just began serving
            state = WatchState(version, marks={u: int(t) + 1 for u, t in active})
        else:
            due = dict(list(state.due(active, since).items())[: self.cfg.users])  # most recent first
            newest = {u: t for u, (_, t) in due.items()}
            samples = self.store.serving_samples(list(due), self.cfg.k, {u: mark for u, (mark, _) in due.items()},
                                                 until_ms=newest)
            served, counted = self.served_correctness(samples, version, counting, serving)
            state.add(served, counted, newest)
            state.forget_before(since)
            if state.verdict(self.cfg.alpha) and self.registry.demote(version):  # unless a cycle promoted meanwhile
                log.warning("the live watch demoted %s: %s", version, state.reason)
        state.seconds = time.time() - t0
        save_watch(self.registry.root, state)
        return state.to_dict()

    def behind_overall(self, version: str | None) -> bool:
        """Whether the live watch's tally for ``version`` has it behind counting (more discordant pairs lost than
        won); True without a tally (the watch is off, or has counted nothing for it yet). A cycle demotes only then:
        one cycle's fresh pairs are few, and a model ahead over everything since it began serving is kept through
        a dip (bench/results/demotion.md)."""
        from trainer.watch import read_watch

        state = read_watch(self.registry.root) if self.cfg.watch and version else None
        if state is None or state.version != version or state.demoted or not state.pairs:
            return True
        return state.losses > state.wins

    def served_correctness(self, samples: list[TrainingSample], version: str, counting,
                           serving=None) -> tuple[np.ndarray, np.ndarray]:
        """Per comparison pair of ``samples`` (promotion.pair_correct), whether the serving ``version`` (or the
        model ``serving``) with the offsets routers add, and ``counting``, ranked it right; crowd evidence from
        the samples' other users before each comparison."""
        from trainer.calibration import apply_offsets, load_offsets
        from trainer.promotion import pair_correct
        from trainer.train import llm_table, score_samples

        if not samples:
            return np.zeros(0), np.zeros(0)
        groups = [g for s in samples for g in s.targets]
        CrowdTable.from_samples(samples).attach(groups, as_of=True)
        model = serving if serving is not None else serving_checkpoint(str(self.registry.path(version))).model
        offsets = load_offsets(self.registry.root, version)
        base = score_samples(model, samples, llm_table(self.store.llm_catalog(), model.cfg.llm_prices))
        scores = [apply_offsets(s, g.llm_ids, offsets) for g, s in zip(groups, base)]
        return pair_correct(groups, scores), pair_correct(groups, counting.score_samples(samples))

    def _save_offsets(self, version: str, out: dict, groups: list, games: float, source: str) -> dict:
        """Write calibrate's chosen offsets for ``version`` unless the file holds a fit on later feedback; ``out``
        gains "written" and is returned."""
        from trainer.calibration import save_offsets

        until = max(g.timestamp for g in groups)
        out["written"] = save_offsets(self.registry.root, version, out["offsets"], until_ms=until,
                                      fresh_pairs=out["fresh_pairs"], games=games, source=source, chosen=out["chosen"])
        log.info("level offsets for %s (%s, %d fresh pairs, %s: %s): %s %s, written=%s", version, source,
                 out["fresh_pairs"], out["criterion"], out["fresh_scores"], out["chosen"], out["offsets"],
                 out["written"])
        return out

    def _log(self, record: CycleRecord, t0: float) -> CycleRecord:
        record.seconds = time.time() - t0
        self.cycles_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cycles_path, "a") as fh:
            fh.write(json.dumps(asdict(record), default=float) + "\n")
        log.info("cycle: %s -> %s promoted=%s (%s)", record.serving_version, record.candidate_version,
                 record.promoted, record.reason)
        return record

    def history(self) -> list[dict]:
        if not self.cycles_path.exists():
            return []
        return [json.loads(line) for line in self.cycles_path.read_text().splitlines() if line.strip()]

    def last_cycle(self) -> dict | None:
        """The newest record of history(), read from the end of the file: the periodic trainer asks at every
        recount, and the file grows by a cycle every few minutes for as long as it runs."""
        if not self.cycles_path.exists():
            return None
        with open(self.cycles_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            span = 1 << 16
            while True:
                fh.seek(max(0, size - span))
                lines = [line for line in fh.read().splitlines() if line.strip()]
                if span >= size or len(lines) > 1:  # a line that starts after another in the span is whole
                    break
                span *= 4
        return json.loads(lines[-1]) if lines else None
