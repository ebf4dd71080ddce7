"""The live watch: demote a serving model as soon as its feedback since it began serving shows it behind counting.

A cycle's judge (trainer/promotion.py) tests the serving model against the count-based scorer on that cycle's
fresh pairs only, a few hundred: one such test rarely settles a gap of a point or two
(bench/results/online_new_llm_seed2_recount.md: 0.655 vs 0.693 on 440 pairs, not significant), and the same test
repeated every cycle sooner or later demotes a model that is level with counting (bench/results/demotion.md). The
watch pools the evidence instead. At every recount (trainer.refresh.RefreshTrainer.watch) the periodic trainer
scores the comparisons counted since the last check, each with the history a router serving it read, by the serving
model (with the level offsets routers add) and by counting (with the global rates routers had), and adds them to a
running tally for that version: ``wins`` (the model right, counting wrong) and ``losses`` (the other way round; a
tie counts as half right, as in promotion.pair_correct). Which comparisons are new is kept per user (``marks``: each
user's newest turn when last read), not by one clock, because events reach the graph out of their time order
(partitions, client clocks, replays); a comparison is counted once its user has taken a later turn, so that its
feedback has most likely arrived, and one rated after that is never counted.

The test is sequential, so looking at every recount costs nothing in error rate. With q the chance that a
discordant pair goes to counting, the null hypothesis is "the model is not worse" (q <= 1/2); the evidence against
it after ``losses`` L and ``wins`` W is the likelihood ratio against q = 1/2, mixed over q uniform on
[1/2, 1/2 + w] and averaged over the widths w in ``WIDTHS``:

    M_w = (1/w) integral over q in [1/2, 1/2 + w] of (2q)^L (2(1 - q))^W dq
        = 2^(L+W) / w * B(L+1, W+1) * (I_{1/2}(W+1, L+1) - I_{1/2-w}(W+1, L+1))

(I the regularized incomplete beta function). Under the null each M_w, and so their mean M, is a nonnegative
supermartingale with M_0 = 1, so by Ville's inequality the chance that M ever reaches 1/alpha is at most alpha,
however often it is looked at; the watch demotes when it does. The narrow widths give the small gaps a model behind
counting usually has (a point of accuracy, with a quarter of the pairs discordant, is q = 0.52) most of their
power; the wide one keeps a model far behind
from waiting for them (bench/results/demotion.md measures the choice; tests/trainer/test_watch.py the error rate
under repeated looks and the power).

The tally lives in ``watch.json`` beside the checkpoints and restarts whenever another version serves: each user's
newest turn then is their mark, so only the comparisons the new version served count.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy.special import betainc, betaln

from prefstream.files import write_atomic

WATCH_FILE = "watch.json"


WIDTHS = (0.025, 0.05, 0.1, 0.2, 0.5)  # the mixture's widths above q = 1/2 (bench/results/demotion.md)


def log_evidence(losses: float, wins: float, widths: tuple[float, ...] = WIDTHS) -> float:
    """log M of the module docstring: the evidence that the serving model is worse than counting after ``losses``
    discordant pairs counting won and ``wins`` the model won (0 with none; -inf only in underflow)."""
    logs = []
    for w in widths:
        lower = float(betainc(wins + 1.0, losses + 1.0, 0.5 - w)) if w < 0.5 else 0.0
        mass = float(betainc(wins + 1.0, losses + 1.0, 0.5)) - lower  # P(1/2 < q < 1/2 + w) under Beta(L+1, W+1)
        logs.append((losses + wins) * math.log(2.0) - math.log(w) + betaln(losses + 1.0, wins + 1.0)
                    + math.log(mass) if mass > 0.0 else -math.inf)
    return float(np.logaddexp.reduce(logs) - math.log(len(widths)))


@dataclass
class WatchState:
    """The running tally for one serving version (``watch.json``)."""

    version: str
    # per user, their newest turn when last read: the comparisons before it are done (counted, or never rated in
    # time), its own is pending until the user takes a later turn (by then its feedback has most likely arrived).
    # At the start, each user's newest turn plus one: what the previous version served is not counted. A user
    # without a mark counts from the trainer's window on (TRAINER_WINDOW_MINUTES); marks older than the window are
    # dropped, since nothing before the window is read again
    marks: dict = field(default_factory=dict)
    pairs: int = 0  # comparison pairs scored
    wins: int = 0  # discordant pairs the serving model got right and counting wrong
    losses: int = 0  # ...the other way round
    right: dict = field(default_factory=lambda: {"serving": 0.0, "count": 0.0})  # pairs right (a tie counts half)
    checks: int = 0  # recounts that found new comparisons
    log_evidence: float = 0.0  # log M
    demoted: bool = False
    reason: str = ""
    seconds: float = 0.0  # the last check's wall time (reading, scoring, testing)

    def add(self, serving: np.ndarray, count: np.ndarray, read: dict[str, int]) -> None:
        """Fold in the per-pair correctness [P] of the serving model and of counting on the comparisons counted, and
        the newest turn of each user ``read``."""
        self.pairs += len(serving)
        self.wins += int(np.sum(serving > count))
        self.losses += int(np.sum(serving < count))
        self.right = {"serving": self.right["serving"] + float(np.sum(serving)),
                      "count": self.right["count"] + float(np.sum(count))}
        self.marks.update({u: int(t) for u, t in read.items()})
        self.checks += int(len(serving) > 0)
        self.log_evidence = log_evidence(self.losses, self.wins)

    def due(self, active: list[tuple[str, int]], since_ms: int) -> dict[str, tuple[int, int]]:
        """Of the users ``active`` ((user, newest turn) in the window that starts at ``since_ms``), those with a
        turn after their mark, as {user: (mark, newest turn)}: their comparisons from the mark up to (not including)
        the newest turn are to be counted."""
        marks = {u: self.marks.get(u, since_ms) for u, _ in active}
        return {u: (marks[u], int(t)) for u, t in active if int(t) > marks[u]}

    def forget_before(self, since_ms: int) -> None:
        """Drop the marks older than the window (its comparisons are never read again)."""
        self.marks = {u: t for u, t in self.marks.items() if t >= since_ms}

    def verdict(self, alpha: float) -> bool:
        """Whether the evidence has reached 1/alpha (and says so in ``reason``); the state is then ``demoted``."""
        served, counted = self.accuracy().values()
        evidence = math.exp(min(self.log_evidence, 700.0))
        self.reason = (f"{self.pairs} pairs since it began serving: serving {served:.3f} vs counting {counted:.3f}, "
                       f"{self.wins} discordant pairs won and {self.losses} lost, evidence {evidence:.3g} (demotes "
                       f"at {1 / alpha:.3g})")
        if self.log_evidence >= math.log(1.0 / alpha):
            self.demoted = True
            self.reason += ": demoted, counting serves"
        return self.demoted

    def accuracy(self) -> dict[str, float]:
        """{"serving", "count"}: the share of the pairs each ranked right (NaN before any pair)."""
        return {k: v / self.pairs if self.pairs else float("nan") for k, v in self.right.items()}

    def to_dict(self) -> dict:
        """The fields, and ``accuracy`` (derived, not read back)."""
        return asdict(self) | {"accuracy": self.accuracy()}


def read_watch(root: Path | str) -> WatchState | None:
    """The watch file's state, or None when there is none (or it cannot be read)."""
    try:
        doc = json.loads((Path(root) / WATCH_FILE).read_text())
        return WatchState(**{f.name: doc[f.name] for f in fields(WatchState) if f.name in doc})
    except (FileNotFoundError, ValueError, TypeError):
        return None


def save_watch(root: Path | str, state: WatchState) -> None:
    """Write the state (temp file + rename)."""
    write_atomic(Path(root) / WATCH_FILE, json.dumps(state.to_dict(), default=float))
