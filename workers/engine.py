"""The routing decision for a micro-batch of requests.

One batched subgraph read, one batched query embedding (cached by text) and, for a model with the crowd term,
one batched read of other users' ratings of the same queries (both beside the subgraph read, in threads), one
batched scorer call.
When a part is down the request still gets exactly one answer:
- graph store down: score with no history (the model's global prior for that query), flagged fallback;
- no model / scorer error: the running per-LLM prior of recent scores, flagged fallback;
- nothing to choose from (unknown candidates, budget excludes all): an error reply with the reason.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, Protocol

import numpy as np

from graphstore.schema import LLMInfo, UserSubgraph, query_key
from prefstream.events import RouteDecision, RouteRequest
from prefstream.metrics import metrics
from streams.route_loop import WARM_UP_BATCHES
from trainer.crowd import CrowdTable
from trainer.decision import choose
from workers.models import ModelSource

log = logging.getLogger(__name__)

MAX_UNSTORED = 10_000  # new request texts waiting for their Query node (bounded while the graph is down)


class StoreLike(Protocol):
    def llm_catalog(self) -> dict[str, LLMInfo]: ...

    def user_subgraphs(self, user_ids: list[str], k: int) -> list[UserSubgraph]: ...

    def user_win_counts(self, user_ids: list[str]) -> list[dict[str, tuple[float, float]]]: ...

    def query_ratings(self, keys: list[str]) -> list[tuple]: ...

    def record_decisions(self, items: list[RouteDecision]) -> None: ...

    def stored_query_embeddings(self, texts: list[str]) -> list[np.ndarray | None]: ...

    def upsert_queries(self, items: list[tuple[str, np.ndarray]]) -> None: ...


class EncoderLike(Protocol):
    def encode(self, texts: list[str], lookup=None) -> np.ndarray: ...


@dataclass
class _Plan:
    request: RouteRequest
    candidates: list[LLMInfo] | None
    error: str | None = None


def _named(explanation: dict, ids: list[str]) -> dict:
    """Per-candidate lists of an explanation keyed by LLM id (what the audit record stores)."""
    return {k: dict(zip(ids, v)) if isinstance(v, list) and len(v) == len(ids) and k != "pushed_by" else v
            for k, v in explanation.items()}


def scorer_name(version: str | None) -> str:
    """What a decision names as its scorer: the count-based scorer, or the model version."""
    from trainer.count_scorer import COUNT_VERSION

    return "count" if version == COUNT_VERSION else f"model {version}"


#: of the deadline: the most one call decides, by the measured time per decided request. Half of the loop's
#: budget for a whole poll (streams/route_loop.py BATCH_BUDGET): under overload a poll's remaining time goes to
#: shedding the older requests it took, and a request waits at most about one poll in the broker and one in hand
DECIDE_BUDGET = 0.25
#: a request is shed when less than its expected decide time is left, counting at most this share of its
#: deadline (a slow batch, such as the first one loading the model, must not make every later request look late)
SHED_MARGIN = 0.5
#: queue-delay control (like CoDel): when the oldest request of a call waited more than QUEUE_TARGET of its deadline
#: in the broker, the share of the deadline one call decides halves (down to MIN_DECIDE_SHARE), so the machine's
#: cores go to answering (shedding) the queue instead of deciding its stale middle; below the target it grows back.
#: The engine's default; routers take PREFSTREAM_ROUTE_QUEUE_TARGET (0: off)
QUEUE_TARGET = 0.5
MIN_DECIDE_SHARE = DECIDE_BUDGET / 8
REPLY_MARGIN_MS = 50.0  # the reply's trip through the broker to the client, counted against the deadline
#: seconds a query's crowd rows (other users' ratings of it) are reused: a popular query asked many times a second
#: is read once per this, not once per batch; other users' new ratings reach its decisions at most this late
CROWD_TTL_S = 2.0


class RouteEngine:
    def __init__(self, store: StoreLike, encoder: EncoderLike, models: ModelSource, history_turns: int = 10,
                 catalog_ttl_s: float = 5.0, record: bool = True, deadline_ms: int = 1000,
                 catalog_cache=None, catalog_source: Callable[[], dict[str, LLMInfo]] | None = None,
                 queue_target: float = QUEUE_TARGET):
        self.store = store
        self.encoder = encoder
        self.models = models
        self.k = history_turns
        self.deadline_ms = deadline_ms
        # running estimate of the decide time per live request: a request with less time left than its whole
        # batch would take (plus the reply's trip) is shed
        self.per_request_ms = 0.0
        self.decide_share = DECIDE_BUDGET  # of the deadline, decided per call (queue-delay control above)
        self.queue_target = queue_target  # 0: no control, every call decides up to DECIDE_BUDGET
        metrics().route_decide_share.set(self.decide_share)
        self._decided_batches = 0
        self.catalog_ttl_s = catalog_ttl_s
        self.record = record
        self._catalog: dict[str, LLMInfo] = {}
        self._catalog_at = -math.inf
        self._catalog_error: str | None = None  # why the last catalog read failed (None: it worked)
        # the graph down and nothing in memory: the copy on disk, else the catalog topic (workers/catalog.py)
        self._catalog_cache = catalog_cache
        self._catalog_source = catalog_source
        self._prior: dict[str, float] = {}  # EMA of scores per LLM, the fallback when no model can score
        self._lock = threading.Lock()
        # request texts the graph had no Query node for: written with the next audit record, so the ingest of
        # the turn that follows a routed request finds the vector instead of running the encoder again
        self._unstored: dict[str, np.ndarray] = {}
        # side reads beside the subgraph read: the query vectors, and the crowd evidence for a model that uses it
        self._side = ThreadPoolExecutor(max_workers=2, thread_name_prefix="side")
        self._crowd_rows: dict[str, tuple[float, list[tuple]]] = {}  # query key -> (read at, its rows), CROWD_TTL_S

    # --- catalog ---------------------------------------------------------------------------
    def catalog(self, missing: set[str] | None = None) -> dict[str, LLMInfo]:
        """The LLM catalog, re-read after its TTL, while it is empty, or when a request names an LLM we have not
        seen."""
        stale = time.monotonic() - self._catalog_at > self.catalog_ttl_s
        if stale or not self._catalog or (missing and not missing <= self._catalog.keys()):
            try:
                self._catalog = self.store.llm_catalog()
                self._catalog_at = time.monotonic()
                self._catalog_error = None
                if self._catalog_cache is not None:
                    self._catalog_cache.save(self._catalog)
            except Exception as exc:
                self._catalog_error = f"{type(exc).__name__}: {exc}"
                if not self._catalog:
                    self._catalog = self._catalog_elsewhere()
                log.warning("catalog read failed; using the last good one (%d LLMs)", len(self._catalog))
        return self._catalog

    def _catalog_elsewhere(self) -> dict[str, LLMInfo]:
        for name, get in (("disk", self._catalog_cache.load if self._catalog_cache else None),
                          ("catalog topic", self._catalog_source)):
            if get is None:
                continue
            try:
                found = get()
            except Exception as exc:
                log.warning("could not read the catalog from the %s: %s", name, exc)
                continue
            if found:
                log.info("catalog of %d LLMs from the %s (the graph store is unreachable)", len(found), name)
                return found
        return {}

    def _plan(self, req: RouteRequest, catalog: dict[str, LLMInfo]) -> _Plan:
        if req.candidates is not None:
            unknown = [c for c in req.candidates if c not in catalog]
            if unknown:
                return _Plan(req, None, f"unknown llm ids {unknown}; register them with LLMRegistered first")
            cands = [catalog[c] for c in req.candidates]
        else:
            cands = sorted(catalog.values(), key=lambda m: m.llm_id)
        if req.budget is not None:
            cands = [c for c in cands if c.price_out <= req.budget]
        if not cands:
            if catalog:
                why = f"no candidate fits the budget {req.budget}"
            elif self._catalog_error:
                why = f"the LLM catalog could not be read from the graph store ({self._catalog_error})"
            else:
                why = "no LLM is registered"
            return _Plan(req, None, why)
        return _Plan(req, cands)

    # --- decide ----------------------------------------------------------------------------
    def decide(self, requests: list[RouteRequest],
               early: Callable[[list[RouteDecision]], None] | None = None) -> list[RouteDecision]:
        """One reply per request, in order: shed (past its deadline, or beyond what fits under overload), error,
        decision or fallback decision. With ``early``, the shed replies are handed to it before the others are
        decided (a shed request must not wait for the batch it was shed from) and the rest are returned."""
        t0 = time.perf_counter()
        wanted = {c for r in requests for c in (r.candidates or [])}
        catalog = self.catalog(wanted)
        now = time.time() * 1000
        fits = self._fits(requests)  # all of them, or under overload the newest that fit
        self._control(requests, now, fits)
        batch_ms = self.per_request_ms * fits + REPLY_MARGIN_MS  # the time to decide what this call decides
        due = [now + min(batch_ms, SHED_MARGIN * self._deadline(r)) > r.timestamp + self._deadline(r)
               for r in requests]
        due = self._overflow(requests, due, fits)
        live = [r for r, d in zip(requests, due) if not d]
        if early is not None and len(live) < len(requests):
            early([self._shed(r, catalog) for r, d in zip(requests, due) if d])
            requests, due = live, [False] * len(live)
        decided = iter(self._decide(live, catalog, t0) if live else [])
        out = [self._shed(r, catalog) if d else next(decided) for r, d in zip(requests, due)]
        if live:
            self._decided_batches += 1
            if self._decided_batches > WARM_UP_BATCHES:  # the first load the model and open connections
                ms = (time.perf_counter() - t0) * 1000 / len(live)
                self.per_request_ms = ms if self.per_request_ms == 0.0 else 0.8 * self.per_request_ms + 0.2 * ms
        else:  # all shed: the estimate may be stale (one slow batch, e.g. the first); let it recover
            self.per_request_ms *= 0.5
        return out

    def _overflow(self, requests: list[RouteRequest], due: list[bool], fits: int) -> list[bool]:
        """Under overload, decide only the newest requests that fit in DECIDE_BUDGET of the deadline at the measured
        cost; the older ones are shed now. Serving the oldest first (FIFO) would make every served request wait
        about its whole deadline once a queue builds; newest first keeps served requests fresh and answers the rest
        at once with the prior (bench/results/reliability.md "overload")."""
        live = [i for i, d in enumerate(due) if not d]
        if len(live) <= fits:
            return due
        keep = set(sorted(live, key=lambda i: requests[i].timestamp)[-fits:])
        return [d or (i not in keep) for i, d in enumerate(due)]

    def _control(self, requests: list[RouteRequest], now_ms: float, fits: int) -> None:
        """Queue-delay control, for the next calls: halve ``decide_share`` when a queue stands (more requests than
        fit) and its oldest request waited past ``queue_target`` of its deadline, else grow it back by a tenth
        towards DECIDE_BUDGET."""
        if not requests:
            return
        waited = max((now_ms - r.timestamp) / self._deadline(r) for r in requests)
        if self.queue_target > 0 and len(requests) > fits and waited > self.queue_target:
            self.decide_share = max(MIN_DECIDE_SHARE, self.decide_share / 2)
        else:
            self.decide_share = min(DECIDE_BUDGET, self.decide_share * 1.1)
        metrics().route_decide_share.set(self.decide_share)

    def _fits(self, requests: list[RouteRequest]) -> int:
        """How many of ``requests`` one call decides within ``decide_share`` (at most DECIDE_BUDGET) of the tightest
        deadline among them (all before the first estimate). The requests' own deadlines count, not the default: a
        batch that asked for minutes is not cut to what fits in the default's second."""
        n = len(requests)
        if self.per_request_ms <= 0 or n == 0:
            return n
        tightest = min(self._deadline(r) for r in requests)
        return min(n, max(1, int(self.decide_share * tightest / self.per_request_ms)))

    def _deadline(self, r: RouteRequest) -> int:
        return r.deadline_ms or self.deadline_ms

    def _shed(self, r: RouteRequest, catalog: dict[str, LLMInfo]) -> RouteDecision:
        """The fast path for a request that cannot be answered in time: no graph read, no model, the prior."""
        p = self._plan(r, catalog)
        if p.error is not None:
            return RouteDecision(request_id=r.request_id, user_id=r.user_id, error=p.error, shed=True)
        ids = [c.llm_id for c in p.candidates]
        s = [self._prior.get(m, 0.0) for m in ids]
        return RouteDecision(request_id=r.request_id, user_id=r.user_id, chosen_llm_id=ids[choose(s, p.candidates)],
                             scores=dict(zip(ids, s)), scorer="prior", fallback=True, shed=True)

    def _decide(self, requests: list[RouteRequest], catalog: dict[str, LLMInfo], t0: float) -> list[RouteDecision]:
        plans = [self._plan(r, catalog) for r in requests]
        ok = [p for p in plans if p.error is None]
        scorer = self.models.scorer
        version = getattr(scorer, "version", None)
        # the queries' vectors are found (cache, graph, encoder) in a thread while this one reads the subgraphs:
        # the encoder runs while the graph answers, instead of after it
        vectors = self._side.submit(self._embed, [p.request.query for p in ok]) \
            if ok and scorer is not None else None
        crowd_read = self._side.submit(self._read_crowds, ok) if ok and getattr(scorer, "uses_crowd", False) else None
        subgraphs = self._read_subgraphs(ok)
        store_down = subgraphs is None
        if subgraphs is None:
            subgraphs = [UserSubgraph(user_id=p.request.user_id) for p in ok]
        if not store_down and getattr(scorer, "whole_past", False):
            self._attach_win_counts(subgraphs)
        crowds = crowd_read.result() if crowd_read is not None and not store_down else [None] * len(ok)
        scores: list[np.ndarray] | None = None
        explains: list[dict] = []
        if vectors is not None:
            try:
                q = vectors.result()
                scores, explains = scorer.decide_batch([(sg, q[i], p.candidates, p.request.conversation_id, crowds[i])
                                                        for i, (sg, p) in enumerate(zip(subgraphs, ok))])
            except Exception:
                log.exception("scorer failed; answering from the prior")
                scores = None

        out: list[RouteDecision] = []
        it = iter(range(len(ok)))
        elapsed = (time.perf_counter() - t0) * 1000
        for p in plans:
            r = p.request
            if p.error is not None:
                out.append(RouteDecision(request_id=r.request_id, user_id=r.user_id, error=p.error,
                                         model_version=version, latency_ms=elapsed))
                continue
            i = next(it)
            ids = [c.llm_id for c in p.candidates]
            if scores is not None:
                s = [float(x) for x in scores[i]]
                fallback, used_version, answered = store_down, version, scorer_name(version)
                self._learn_prior(ids, s)
            else:
                s = [self._prior.get(m, 0.0) for m in ids]
                fallback, used_version, answered = True, None, "prior"
            best = choose(s, p.candidates)
            out.append(RouteDecision(
                request_id=r.request_id, user_id=r.user_id, chosen_llm_id=ids[best], scores=dict(zip(ids, s)),
                model_version=used_version, scorer=answered, turn_ids=list(subgraphs[i].turn_ids),
                explain=_named(explains[i], ids) if scores is not None else {}, latency_ms=elapsed,
                fallback=fallback))
        return out

    def _read_subgraphs(self, ok: list[_Plan]) -> list[UserSubgraph] | None:
        """The requesting users' subgraphs in one batched read; None when the graph store failed."""
        if not ok:
            return []
        try:
            t_read = time.perf_counter()
            subgraphs = self.store.user_subgraphs([p.request.user_id for p in ok], self.k)
            metrics().subgraph_read.observe(time.perf_counter() - t_read)
            return subgraphs
        except Exception as exc:
            log.warning("graph store read failed (%s); scoring without history", exc)
            return None

    def _read_crowds(self, ok: list[_Plan]) -> list[np.ndarray | None]:
        """Per request, other users' centred ratings of each candidate on the same query text (trainer/crowd.py),
        in one batched read; all None when it fails (the model then scores without them)."""
        keys = [query_key(p.request.query) for p in ok]
        try:
            table = CrowdTable.from_rows(self._crowd_rows_of(keys))
        except Exception as exc:
            log.warning("crowd read failed (%s); scoring without other users' ratings", exc)
            return [None] * len(ok)
        return [table.evidence(k, [c.llm_id for c in p.candidates], p.request.user_id) for k, p in zip(keys, ok)]

    def _crowd_rows_of(self, keys: list[str]) -> list[tuple]:
        """query_ratings rows of ``keys``: those read less than CROWD_TTL_S ago reused, the others read in one call."""
        now = time.monotonic()
        keys = list(dict.fromkeys(keys))
        fresh = {k: v for k, v in self._crowd_rows.items() if now - v[0] < CROWD_TTL_S}  # the expired dropped
        missing = [k for k in keys if k not in fresh]
        if missing:
            read: dict[str, list[tuple]] = {k: [] for k in missing}
            for row in self.store.query_ratings(missing):
                read.setdefault(row[0], []).append(row)
            fresh.update((k, (now, rows)) for k, rows in read.items())
        self._crowd_rows = fresh
        return [row for k in keys for row in fresh[k][1]]

    def _embed(self, texts: list[str]) -> np.ndarray:
        """[N, D] query vectors: the encoder's cache, then the graph's Query nodes, then the encoder. Texts the
        graph had no vector for are kept to be stored with the audit record (without one, record=False, nothing
        would store them, and the graph is not asked either)."""
        t0 = time.perf_counter()
        new: list[str] = []
        q = self.encoder.encode(texts, lookup=partial(self._stored_queries, new=new) if self.record else None)
        self._queue_new(new, texts, q)
        metrics().encoder.labels("router").observe(time.perf_counter() - t0)
        return q

    def _attach_win_counts(self, subgraphs: list[UserSubgraph]) -> None:
        """Each user's whole-past win counts, for a scorer that counts (a failed read: the history's turns)."""
        try:
            found = self.store.user_win_counts([sg.user_id for sg in subgraphs])
        except Exception as exc:
            log.warning("win count read failed (%s); counting the history's turns", exc)
            return
        for sg, wc in zip(subgraphs, found):
            sg.win_counts = wc

    # --- query embeddings shared through the graph -----------------------------------------------
    def _stored_queries(self, texts: list[str], new: list[str]) -> list[np.ndarray | None]:
        """Encoder lookup: the graph's vectors for texts the encoder's cache lacks; the others go to ``new``."""
        try:
            found = self.store.stored_query_embeddings(texts)
        except Exception as exc:  # the graph being down must not stop routing: the encoder still works
            log.warning("query embedding lookup failed (%s); encoding", exc)
            return [None] * len(texts)
        new += [t for t, v in zip(texts, found) if v is None]
        return found

    def _queue_new(self, new: list[str], texts: list[str], q: np.ndarray) -> None:
        vec = dict(zip(texts, q))
        with self._lock:
            for t in new:
                if len(self._unstored) < MAX_UNSTORED:
                    self._unstored[t] = vec[t]

    def _learn_prior(self, ids: list[str], s: list[float], alpha: float = 0.02) -> None:
        with self._lock:
            for m, v in zip(ids, s):
                self._prior[m] = v if m not in self._prior else (1 - alpha) * self._prior[m] + alpha * v

    def record_decisions(self, decisions: list[RouteDecision]) -> None:
        """Write decisions to the graph for audit; a failure is logged, never fails the reply."""
        if not self.record or not decisions:
            return
        try:
            self.store.record_decisions(decisions)
        except Exception as exc:
            log.warning("could not record %d decisions for audit: %s", len(decisions), exc)
        with self._lock:
            new, self._unstored = list(self._unstored.items()), {}
        if new:
            try:
                self.store.upsert_queries(new)
            except Exception as exc:  # not an error: the ingest embeds the text itself then
                log.warning("could not store %d new query embeddings: %s", len(new), exc)
