"""Which scorer serves right now: the registry's CURRENT version, swapped in without a pause.

A background thread polls the registry; a new version is loaded off the request path and then made
current with one reference assignment, so a micro-batch in flight finishes on the model it started with.
With no promoted version (a new deployment, or the last model was demoted) the count-based scorer serves,
with global win rates the router recounts from the graph every few seconds (the trainer's last count at
start; trainer/count_scorer.py): never worse than counting. A served model also follows the level offsets the
trainer fitted for it (``offsets.json``, trainer/calibration.py) for LLMs it never learned.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)


class ScorerLike(Protocol):
    version: str

    def score_batch(self, items: list[tuple]) -> list[np.ndarray]: ...

    def decide_batch(self, items: list[tuple], explain: bool = True) -> tuple[list[np.ndarray], list[dict]]: ...


class ModelSource:
    """Holds the serving scorer and follows the model registry."""

    def __init__(self, model_dir: Path | str, poll_s: float = 2.0,
                 count_source: Callable[[], dict[str, tuple[float, float]]] | None = None, count_every_s: float = 10.0,
                 torch_threads: int | None = None, space: str | None = None):
        """``count_source``: the global (wins, games) per LLM read from the graph; while the count-based scorer
        serves, its global rates are recounted from it every ``count_every_s`` (the trainer's count.json lags
        by a cycle). ``space``: the vector space of the router's encoder (prefstream.encoder.embedding_space)."""
        from trainer.registry import ModelRegistry

        self.registry = ModelRegistry(model_dir)
        self.poll_s = poll_s
        self.count_source = count_source
        self.count_every_s = count_every_s
        self.torch_threads = torch_threads  # set when the first trained model loads (torch is imported then)
        self._counted = None  # the CountScorer of the router's last recount (fresher than the trainer's file)
        self._count_tried = -float("inf")  # monotonic time of the last recount, failed or not
        self._scorer: ScorerLike | None = None
        self.space = space  # the router encoder's vector space: a checkpoint trained on another is refused
        self._refused: str | None = None  # the version that failed to load
        self._offsets_stamp: int | None = None  # mtime of the offsets file the serving model's offsets came from
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    @property
    def scorer(self) -> ScorerLike | None:
        return self._scorer

    def set_scorer(self, scorer: ScorerLike | None) -> None:
        self._scorer = scorer

    def refresh(self) -> bool:
        """Load the registry's current version if it differs from the one serving; True if swapped."""
        version = self.registry.current()
        if version is None:
            return self._serve_counts()
        if self._scorer is not None and self._scorer.version == version:
            return self._follow_offsets(version)
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        from trainer.scorer import Scorer

        if version == self._refused:
            return False
        try:
            scorer = Scorer.load(self.registry.path(version), space=self.space)
            scorer.version = version
        except Exception:  # a broken checkpoint must not take serving down; keep the old one, or count
            log.exception("could not load model version %s; still serving %s", version,
                          getattr(self._scorer, "version", "the count-based scorer"))
            self._refused = version  # not retried every poll: a new version (or a restart) tries again
            return self._serve_counts() if self._scorer is None else False
        self._scorer = scorer
        self._offsets_stamp = None
        self._follow_offsets(version)
        log.info("serving model version %s", version)
        return True

    def _follow_offsets(self, version: str) -> bool:
        """Give the serving model the level offsets the trainer fitted for ``version`` (trainer/calibration.py)
        when the file changed; True if they changed."""
        from trainer.calibration import OFFSETS_FILE, load_offsets

        try:
            stamp = (self.registry.root / OFFSETS_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._offsets_stamp:
            return False
        self._offsets_stamp = stamp
        offsets = load_offsets(self.registry.root, version)
        if offsets == self._scorer.offsets:  # rewritten (a later fit chose the same, or for another version)
            return False
        log.info("model %s: level offsets %s", version, offsets)
        self._scorer.offsets = offsets
        return True

    def _serve_counts(self) -> bool:
        """The count-based scorer, reloaded when the trainer has counted new global rates."""
        from trainer.count_scorer import RATES_FILE, CountScorer

        try:
            stamp = (self.registry.root / RATES_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        current = self._scorer
        if isinstance(current, CountScorer) and getattr(current, "stamp", None) == stamp:
            return False
        scorer = CountScorer.load(self.registry.root)
        if self._counted is not None:  # the router's own recount is fresher than the trainer's file
            scorer = CountScorer(self._counted.rates, scorer.prior, self._counted.pairs)
        scorer.stamp = stamp
        self._scorer = scorer
        log.info("serving the count-based scorer (%d global pairs)", scorer.pairs)
        return True

    def recount(self) -> bool:
        """Recount the serving count-based scorer's global rates from ``count_source``; True if it did."""
        from trainer.count_scorer import CountScorer

        current = self._scorer
        if self.count_source is None or not isinstance(current, CountScorer):
            return False
        self._count_tried = time.monotonic()
        try:
            counts = self.count_source()
        except Exception as exc:  # the graph down: keep the rates we have
            log.warning("could not recount the global win rates: %s", exc)
            return False
        self._counted = fresh = CountScorer.from_counts(counts, current.prior)
        fresh.stamp = getattr(current, "stamp", None)
        self._scorer = fresh
        return True

    def start(self) -> "ModelSource":
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="model-source", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()
            if time.monotonic() - self._count_tried >= self.count_every_s:
                self.recount()
