"""The GraphStore interface and everything the two backends share.

A backend only knows how to run one known Cypher text with parameters (``_write`` / ``_read``), how to
create its DDL and how to close; turning events into parameter rows and rows into tensors-ready objects
happens here once, so FalkorDB and Neo4j cannot behave differently beyond their dialects.
"""

from __future__ import annotations

import json
import threading
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from graphstore import codec, cypher
from graphstore.schema import KEYS, Label, LLMInfo, TrainingSample, UserSubgraph, query_key
from graphstore.subgraph import assemble
from prefstream.events import ChatTurn, Feedback, LLMRegistered, Pairwise, RouteDecision

if TYPE_CHECKING:
    from graphstore.sampler import PastCounts


WIN_COUNTS_KEPT = "win_counts"  # the Meta key marking a graph whose win counts the writes keep
EMBEDDING_SPACE = "embedding_space"  # the Meta key holding the space of the graph's query vectors
RECOUNT_USERS = 64  # users whose uncounted comparisons one read of recount_win_counts finds
# A claim on a graph with vectors but no recorded space re-encodes this many stored texts; the vectors are the
# encoder's when the median cosine reaches this (bench/results/encoder_space.md measures the packaged backends;
# tests/test_encoder_backends.py holds onnx and torch, one space, above it and static, another, below).
SPACE_CHECK_TEXTS = 16
SPACE_CHECK_COSINE = 0.95


class UnknownQuery(ValueError):
    """A Cypher text that is not one of graphstore.cypher's constants (the parameters-only guard)."""


class EmbeddingSpaceMismatch(RuntimeError):
    """The graph's query vectors are of another embedding space than this process's encoder."""


def check_query(q: str) -> str:
    if q not in cypher.ALL:
        raise UnknownQuery("refusing a Cypher text that is not a graphstore.cypher constant; "
                           "pass values as parameters, never in the text")
    return q


def chunks(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def latest_by(rows: Iterable[dict], key: str, order: str) -> list[dict]:
    """One row per key (the one with the greatest ``order`` value), sorted by ``order`` ascending.

    MERGE inside one UNWIND must not see the same key twice (backends differ on what a row sees of earlier
    rows' writes), and ascending order makes 'last write wins' equal 'latest wins'."""
    best: dict[Any, dict] = {}
    for r in rows:
        k = r[key]
        if k not in best or (r[order], str(r)) >= (best[k][order], str(best[k])):
            best[k] = r
    return sorted(best.values(), key=lambda r: (r[order], str(r[key])))


def waves(rows: Sequence[dict], targets_of) -> list[list[dict]]:
    """Split time-ordered rows into consecutive groups in which no two rows touch the same target.

    A row's conditional update ("the latest feedback wins") must compare against what earlier rows wrote,
    and a backend may evaluate one UNWIND's rows in any order, so rows sharing a target go to later waves."""
    out: list[list[dict]] = []
    last: dict[str, int] = {}
    for r in rows:
        keys = targets_of(r)
        w = max((last[k] + 1 for k in keys if k in last), default=0)
        while len(out) <= w:
            out.append([])
        out[w].append(r)
        for k in keys:
            last[k] = w
    return out


class GraphStore(ABC):
    """prefstream's memory: users, LLMs, queries, responses, turns, feedback and routing decisions."""

    #: Decoded query embeddings kept per store (Query nodes never change once created: ON CREATE SET only).
    #: 16,384 vectors of 384 float32 are ~25 MB.
    EMB_CACHE_SIZE = 16_384

    def __init__(self, batch_size: int = 1000, emb_cache_size: int | None = None) -> None:
        self.batch_size = batch_size
        self.emb_cache_size = self.EMB_CACHE_SIZE if emb_cache_size is None else int(emb_cache_size)
        self._embs: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._embs_lock = threading.Lock()
        self._emb_served = 0.0  # cold: read embeddings with the turns until the cache proves useful

    def _forget_cached(self) -> None:
        """Drop cached query embeddings (after ``clear``: a new graph may hold other vectors under a key)."""
        with self._embs_lock:
            self._embs.clear()
            self._emb_served = 0.0

    def query_embeddings(self, keys: Sequence[str], known: dict[str, str] | None = None
                         ) -> dict[str, np.ndarray | None]:
        """Decoded embedding of each Query key (None: no such node or no embedding), from the LRU cache when
        there, else from ``known`` (encoded embeddings a read already returned), else in one read for all the
        still missing keys. The arrays are shared with the cache: do not modify them."""
        out: dict[str, np.ndarray | None] = {}
        missing: list[str] = []
        cache = self._embs
        with self._embs_lock:
            for key in keys:
                if key in out:
                    continue
                if key in cache:
                    cache.move_to_end(key)
                    out[key] = cache[key]
                else:
                    missing.append(key)
                    out[key] = None
            n = len(out)
            if n:  # how often, recently, the cache had all a read needed: picks the next read's query text
                self._emb_served = 0.75 * self._emb_served + 0.25 * (not missing)
        if not missing:
            return out
        found: dict[str, np.ndarray | None] = {}
        fetch = []
        for key in missing:
            text = known.get(key) if known else None
            if text is not None:
                found[key] = codec.decode(text)
            else:
                fetch.append(key)
        for part in chunks(fetch, max(self.batch_size, 1)):
            for key, emb in self._read(cypher.QUERY_EMBS, {"keys": list(part)}):
                found[key] = codec.decode(emb)
        with self._embs_lock:
            for key in missing:
                vec = found.get(key)
                out[key] = vec
                if key in found and self.emb_cache_size > 0:  # an unknown key may appear later: not cached
                    cache[key] = vec
            while len(cache) > self.emb_cache_size:
                cache.popitem(last=False)
        return out

    # --- public reads of known Cypher (benchmarks, diagnostics) -------------------------------------
    def read(self, q: str, params: dict) -> list[list]:
        """Run one read query of ``graphstore.cypher`` (any other text is refused) and return its rows."""
        return self._read(q, params)

    def ping(self) -> None:
        """One round trip that reads nothing: the floor under every read."""
        self._read(cypher.PING, {})

    @property
    def inline_embeddings(self) -> bool:
        """Whether the next subgraph read brings query embeddings inline (the cache has not been serving)."""
        return self._emb_served < 0.5

    # --- backend hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _write(self, q: str, params: dict) -> list[list]: ...

    @abstractmethod
    def _read(self, q: str, params: dict) -> list[list]: ...

    @abstractmethod
    def _create_schema(self) -> bool:
        """Create the backend's indexes / constraints (cypher.FALKOR_DDL / NEO4J_DDL) that do not exist yet;
        False only when certainly none was missing."""

    def ensure_schema(self) -> None:
        """Create indexes / constraints for every key and bring older stored data up to the current shape;
        safe to call any number of times."""
        # Stored data can lack `position` only if its index was missing too (both came in one change), so the
        # backfill's scan of every turn runs when an index was created, not at every start.
        if self._create_schema():
            self._write(cypher.BACKFILL_TURN_POSITIONS, {})
        # A graph written before the writes kept the win counts gets them once; the mark saves the scan later (an
        # empty graph needs neither, and stays empty).
        if not self._read(cypher.META_VALUE, {"key": WIN_COUNTS_KEPT}) and self.count(Label.TURN):
            self.recount_win_counts()
            self._write(cypher.CLAIM_META, {"key": WIN_COUNTS_KEPT, "value": "kept"})

    def recount_win_counts(self, user_ids: Sequence[str] | None = None) -> int:
        """Count every rated comparison that no write has counted yet into the per-(user, LLM) win counts
        (cypher.RECOUNT_COMPARISONS), every user's or those of ``user_ids``; the number of comparisons recounted.
        For graphs written before the writes kept the counts (ensure_schema runs it once), for loaders that bypass
        ``upsert_turns`` / ``upsert_feedback``, and after :meth:`rebuild_win_counts` forgot them."""
        users = [u for u, _ in self.active_users()] if user_ids is None else list(dict.fromkeys(user_ids))
        groups = 0
        for part in chunks(users, RECOUNT_USERS):
            found = [(u, p) for u, p in self._read(cypher.UNCOUNTED_COMPARISONS, {"uids": list(part)})]
            self._recount(found)
            groups += len(found)
        return groups

    def rebuild_win_counts(self, user_ids: Sequence[str]) -> int:
        """Forget the users' kept win counts (their WIN_COUNT edges and their answers' shares, in one write per
        batch: cypher.CLEAR_WIN_COUNTS) and count each of their rated comparisons again from the stored ratings;
        the number of comparisons counted. Safe beside live writes: a comparison a write recounts after the
        forgetting is counted by that write and not again here. Until a user's batch is counted again, a router
        reads part of their counts (graphstore.count_check repairs a user in one batch)."""
        users = list(dict.fromkeys(user_ids))
        groups = 0
        for part in chunks(users, RECOUNT_USERS):
            self._write(cypher.CLEAR_WIN_COUNTS, {"uids": list(part)})
            groups += self.recount_win_counts(part)
        return groups

    def rated_shares(self, user_ids: Sequence[str]) -> tuple[dict[str, list[tuple]], dict[str, dict[str, tuple]]]:
        """In one read: per user, their rated answers as (comparison position, LLM, rating, kept share wins, kept
        share games) rows (a share is None where no recount set it), and their kept counts {LLM: (wins, games)},
        every WIN_COUNT edge (graphstore.count_check compares the two)."""
        uids = list(dict.fromkeys(user_ids))
        rated: dict[str, list[tuple]] = {u: [] for u in uids}
        kept: dict[str, dict[str, tuple]] = {u: {} for u in uids}
        for part in chunks(uids, self.batch_size):
            for uid, pos, llm, rating, wins, games in self._read(cypher.USER_RATED_SHARES_AND_KEPT,
                                                                 {"uids": list(part)}):
                if pos is None:
                    kept[uid][llm] = (wins, games)
                else:
                    rated[uid].append((pos, llm, rating, wins, games))
        return rated, kept

    def _recount(self, groups: Iterable[tuple[str, str]]) -> None:
        """Recount these (user id, turn position) comparisons into the win counts, after their turns or ratings
        were written."""
        rows = [{"uid": u, "pos": p} for u, p in sorted(set(groups))]  # sorted: Neo4j takes user locks in order
        for part in chunks(rows, self.batch_size):
            self._write(cypher.RECOUNT_COMPARISONS, {"groups": list(part)})

    LIST_INDEXES: str  # the backend's cypher.*_LIST_INDEXES

    def missing_indexes(self) -> list[str]:
        """'Label.property' for each index of the schema (cypher.REQUIRED_INDEXES) the server lacks."""
        have = {(row[0], p) for row in self._read(self.LIST_INDEXES, {}) for p in (row[1] or [])}
        return [f"{label}.{prop}" for label, prop in cypher.REQUIRED_INDEXES if (label, prop) not in have]

    @abstractmethod
    def clear(self) -> None:
        """Delete every node and edge (tests, benchmarks); the schema stays usable."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_batched(self, q: str, rows: Sequence[dict], write_id: bool = False) -> None:
        """``q`` once per ``batch_size`` rows (``write_id``: each with a fresh ``$write_id``, cypher.UPSERT_TURNS)."""
        for part in chunks(rows, self.batch_size):
            self._write(q, {"rows": list(part), **({"write_id": uuid.uuid4().hex} if write_id else {})})

    # --- writes -----------------------------------------------------------------------------------
    def upsert_llms(self, items: Sequence[tuple[LLMRegistered, np.ndarray]]) -> None:
        """Add or update catalog entries; an older registration never overwrites a newer one."""
        rows = [{"llm_id": e.llm_id, "description": e.description, "price_in": float(e.price_in),
                 "price_out": float(e.price_out), "emb": codec.encode(emb), "ts": e.timestamp}
                for e, emb in items]
        self._write_batched(cypher.UPSERT_LLMS, latest_by(rows, "llm_id", "ts"))

    def upsert_turns(self, items: Sequence[tuple[ChatTurn, np.ndarray, np.ndarray | None]]) -> None:
        """Store turns with their user, LLM, query, response and conversation chain; replays change nothing."""
        turns = latest_by(({"turn_id": t.event_id, "user_id": t.user_id, "conversation_id": t.conversation_id,
                            "turn_index": t.turn_index, "ts": t.timestamp, "llm_id": t.llm_id,
                            "query_key": query_key(t.query), "response": t.response,
                            "response_emb": codec.encode(r), "_query": (t.query, q)}
                           for t, q, r in items), "turn_id", "ts")
        for part in chunks(turns, self.batch_size):
            users: dict[str, dict] = {}
            queries: dict[str, dict] = {}
            for r in part:  # each distinct user / query once per batch, with the batch's time span
                u = users.setdefault(r["user_id"], {"user_id": r["user_id"], "first_ms": r["ts"], "last_ms": r["ts"]})
                u["first_ms"], u["last_ms"] = min(u["first_ms"], r["ts"]), max(u["last_ms"], r["ts"])
                queries.setdefault(r["query_key"], r["_query"])
            self._write(cypher.UPSERT_USERS, {"rows": list(users.values())})
            self._write(cypher.MERGE_LLMS, {"rows": [{"llm_id": m} for m in sorted({r["llm_id"] for r in part})]})
            self._write_queries(queries.items())
            self._write(cypher.UPSERT_TURNS, {"rows": [{k: v for k, v in r.items() if k != "_query"} for r in part],
                                              "write_id": uuid.uuid4().hex})
            self._recount((r["user_id"], f"{r['conversation_id']}#{r['turn_index']}") for r in part)

    def _write_queries(self, items: Iterable[tuple[str, tuple[str, np.ndarray]]]) -> None:
        """(query key, (text, embedding)) -> Query nodes; an existing node keeps its text and embedding."""
        self._write(cypher.UPSERT_QUERIES, {"rows": [{"query_key": k, "text": t, "emb": codec.encode(e)}
                                                     for k, (t, e) in items]})

    def upsert_queries(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Store query texts with their embeddings (the router's new texts), so that nobody embeds them again."""
        rows = {query_key(t): (t, e) for t, e in items}
        for part in chunks(list(rows.items()), self.batch_size):
            self._write_queries(part)

    def claim_embedding_space(self, space: str, encode: Callable[[list[str]], np.ndarray] | None = None) -> str:
        """Record ``space`` (prefstream.encoder.embedding_space) as the space of the graph's query vectors when
        none is recorded yet, and return it. Raises :class:`EmbeddingSpaceMismatch` when the graph holds another:
        a process that would store or read query vectors must not mix spaces (a model trained on one scores
        another's vectors badly and nothing else notices).

        A graph can hold vectors and no record (written before spaces were recorded). With ``encode`` (the
        process's encoder), a claim on such a graph first encodes some stored query texts again and refuses when
        the stored vectors are not this encoder's (the median cosine under SPACE_CHECK_COSINE); without it, such
        a graph is claimed unchecked."""
        if encode is not None and not self._read(cypher.META_VALUE, {"key": EMBEDDING_SPACE}):
            self._check_stored_space(space, encode)
        (stored,), = self._write(cypher.CLAIM_META, {"key": EMBEDDING_SPACE, "value": space})
        if stored != space:
            raise EmbeddingSpaceMismatch(
                f"the graph's query vectors are {stored} vectors but this process encodes {space}: set "
                f"PREFSTREAM_ENCODER / PREFSTREAM_ENCODER_BACKEND to match the graph, or use another graph "
                f"(PREFSTREAM_GRAPH_NAME) for this encoder")
        return stored

    def _check_stored_space(self, space: str, encode: Callable[[list[str]], np.ndarray]) -> None:
        """Raise EmbeddingSpaceMismatch when the stored query vectors (a sample) are not ``encode``'s."""
        rows = [(t, codec.decode(e)) for t, e in self._read(cypher.QUERY_SAMPLE, {"n": SPACE_CHECK_TEXTS})
                if t is not None and e is not None]
        if not rows:
            return
        mine = np.asarray(encode([t for t, _ in rows]), dtype=np.float32)
        theirs = np.stack([v for _, v in rows])
        cos = (mine * theirs).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1) + 1e-12)
        median = float(np.median(cos))
        if median < SPACE_CHECK_COSINE:
            raise EmbeddingSpaceMismatch(
                f"the graph holds query vectors with no recorded space, and they are not this process's {space} "
                f"vectors (median cosine {median:.2f} over {len(rows)} stored texts encoded again): "
                f"set PREFSTREAM_ENCODER / PREFSTREAM_ENCODER_BACKEND to the encoder that wrote them, or use "
                f"another graph (PREFSTREAM_GRAPH_NAME) for this encoder")

    def stored_query_embeddings(self, texts: list[str]) -> list[np.ndarray | None]:
        """The Query-node embedding of each text, None where the graph has none (a ``TextEncoder`` lookup)."""
        keys = [query_key(t) for t in texts]
        found = self.query_embeddings(keys)
        return [found.get(k) for k in keys]

    def upsert_feedback(self, items: Sequence[Feedback]) -> None:
        """Keep every feedback event (by event id) and apply the latest rating to the rated response(s).

        Pairwise feedback rates the preferred turn ``rating`` and the rejected turn ``1 - rating``."""
        rows = []
        for f in items:
            s = f.signal
            targets = [{"response_id": f.turn_id, "rating": float(f.rating)}]
            if isinstance(s, Pairwise):
                targets.append({"response_id": s.rejected_turn_id, "rating": 1.0 - float(f.rating)})
            rows.append({"feedback_id": f.event_id, "user_id": f.user_id, "turn_id": f.turn_id,
                         "ts": f.timestamp, "rating": float(f.rating), "kind": s.kind,
                         "signal": s.model_dump_json(),
                         "rejected_turn_id": s.rejected_turn_id if isinstance(s, Pairwise) else None,
                         "targets": targets})
        for wave in waves(latest_by(rows, "feedback_id", "ts"), lambda r: [t["response_id"] for t in r["targets"]]):
            self._write_batched(cypher.UPSERT_FEEDBACK, wave)
            rated = list(dict.fromkeys(t["response_id"] for r in wave for t in r["targets"]))  # = their turns' ids
            self._recount(tuple(g) for part in chunks(rated, self.batch_size)
                          for g in self._read(cypher.TURN_POSITIONS, {"ids": list(part)}))

    def record_decisions(self, items: Sequence[RouteDecision]) -> None:
        """Keep routing decisions for audit: scores, model version, latency, fallback and the turns used."""
        rows = latest_by(({"request_id": d.request_id, "user_id": d.user_id, "chosen_llm_id": d.chosen_llm_id,
                           "scores": json.dumps(d.scores, sort_keys=True), "model_version": d.model_version,
                           "scorer": d.scorer, "explain": json.dumps(d.explain, sort_keys=True) if d.explain else None,
                           "turn_ids": list(d.turn_ids), "latency_ms": float(d.latency_ms),
                           "fallback": bool(d.fallback), "error": d.error, "ts": d.timestamp}
                          for d in items), "request_id", "ts")
        self._write_batched(cypher.UPSERT_DECISIONS, rows, write_id=True)

    # --- reads ------------------------------------------------------------------------------------
    def count(self, label: str) -> int:
        if label not in KEYS:
            raise ValueError(f"unknown label {label!r}; expected one of {sorted(KEYS)}")
        rows = self._read(cypher.COUNT[label], {})
        return int(rows[0][0]) if rows else 0

    def count_edges(self, rel: str) -> int:
        if rel not in cypher.COUNT_REL:
            raise ValueError(f"unknown relationship type {rel!r}; expected one of {sorted(cypher.COUNT_REL)}")
        rows = self._read(cypher.COUNT_REL[rel], {})
        return int(rows[0][0]) if rows else 0

    def llm_catalog(self) -> dict[str, LLMInfo]:
        """Registered LLMs (an LLM only seen in turns, never registered, is not a candidate)."""
        out = {}
        for llm_id, desc, p_in, p_out, emb in self._read(cypher.LLM_CATALOG, {}):
            vec = codec.decode(emb)
            out[llm_id] = LLMInfo(llm_id, desc, float(p_in), float(p_out),
                                  vec if vec is not None else np.zeros(0, np.float32))
        return out

    def _user_rows(self, user_ids: Sequence[str], k: int, conversation_id: str | None = None,
                   before_ms: int | None = None) -> dict[str, list[list]]:
        rows: dict[str, list[list]] = {u: [] for u in user_ids}
        if k <= 0 or not user_ids:
            return rows
        uids = list(dict.fromkeys(user_ids))
        filters = {"k": int(k), "conversation_id": conversation_id, "before_ms": before_ms}
        if len(uids) == 1:
            self._turn_rows(cypher.USER_TURNS_ONE, cypher.USER_TURNS_ONE_EMB, {"uid": uids[0], **filters}, rows)
        else:
            for part in chunks(uids, self.batch_size):
                self._turn_rows(cypher.USER_TURNS, cypher.USER_TURNS_EMB, {"uids": list(part), **filters}, rows)
        return rows

    def _turn_rows(self, plain: str, with_emb: str, params: dict, rows: dict[str, list[list]]) -> None:
        """Run a read of turns (``plain``: _TURN_COLUMNS; ``with_emb``: the same with the query embedding last)
        and add its rows, each with its query embedding, to ``rows``[user id]."""
        # A cache that usually has every embedding a read needs gets keys only (``plain``); otherwise the
        # embeddings come in the same round trip: one missing key would cost a second read, so the choice
        # follows whole reads, not the share of keys found (0.9 of 10 keys is 0.35 of reads).
        inline = self.inline_embeddings
        got = self._read(with_emb if inline else plain, params)
        known = {r[4]: r.pop() for r in got} if inline else None
        # columns as subgraph.TURN_ID..RATING_MS; the query embedding (QEMB) is appended from the cache
        embs = self.query_embeddings([r[4] for r in got], known)
        for r in got:
            r.append(embs[r[4]])
            rows[r[0]].append(r[1:])

    def user_subgraph(self, user_id: str, k: int, conversation_id: str | None = None,
                      before_ms: int | None = None) -> UserSubgraph:
        """The user's last ``k`` turns (optionally of one conversation / strictly before a time), oldest first.

        An unknown user gets an empty subgraph."""
        return assemble(user_id, self._user_rows([user_id], k, conversation_id, before_ms)[user_id], k)

    def user_subgraphs(self, user_ids: Sequence[str], k: int) -> list[UserSubgraph]:
        """``user_subgraph`` for many users in one round trip (per ``batch_size`` users), in input order."""
        rows = self._user_rows(user_ids, k)
        return [assemble(u, rows[u], k) for u in user_ids]

    def user_win_counts(self, user_ids: Sequence[str]) -> list[dict[str, tuple[float, float]]]:
        """Per user, each LLM's pairwise (wins, games) over every rated comparison of the user's whole past
        (graphstore.counts' rules, kept by the writes: a row per LLM), in input order; an unknown user gets {}."""
        found: dict[str, dict[str, tuple[float, float]]] = {u: {} for u in user_ids}
        for part in chunks(list(found), self.batch_size):
            for uid, llm, wins, games in self._read(cypher.USER_WIN_COUNTS, {"uids": list(part)}):
                found[uid][llm] = (float(wins), float(games))
        return [dict(found[u]) for u in user_ids]

    def query_ratings(self, keys: Sequence[str], limit: int = 500) -> list[tuple]:
        """(query key, user id, conversation id, turn index, LLM id, rating) of the newest ``limit`` rated answers
        to each Query key, by every user (trainer/crowd.py makes them crowd evidence); unknown keys give none."""
        out: list[tuple] = []
        for part in chunks(list(dict.fromkeys(keys)), self.batch_size):
            out += [tuple(r) for r in self._read(cypher.QUERY_RATED, {"keys": list(part), "limit": int(limit)})]
        return out

    def turn_owners(self, turn_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """{turn id: (user id, LLM id)} for the stored turns among ``turn_ids`` (unknown ids are absent)."""
        out: dict[str, tuple[str, str]] = {}
        for part in chunks(list(dict.fromkeys(turn_ids)), self.batch_size):
            for tid, uid, llm in self._read(cypher.TURN_OWNERS, {"ids": list(part)}):
                out[tid] = (uid, llm)
        return out

    def global_win_counts(self, n_users: int, since_ms: int | None = None) -> dict[str, tuple[float, float]]:
        """Each LLM's pairwise (wins, games) summed over the whole past of the ``n_users`` most recently active
        users (active at or after ``since_ms``): the global rates the count-based scorer shrinks each user's own
        rates towards."""
        total: dict[str, list[float]] = {}
        for wc in self.user_win_counts([u for u, _ in self.active_users(since_ms)[:n_users]]):
            for m, (w, g) in wc.items():
                t = total.setdefault(m, [0.0, 0.0])
                t[0] += w
                t[1] += g
        return {m: (w, g) for m, (w, g) in total.items()}

    def active_users(self, since_ms: int | None = None) -> list[tuple[str, int]]:
        """(user_id, last turn time) of users with a turn at or after ``since_ms``, most recent first."""
        users = [(u, int(t)) for u, t in self._read(cypher.ACTIVE_USERS, {"since_ms": since_ms})]
        return sorted(users, key=lambda x: (-x[1], x[0]))

    def sample_training(self, n_users: int, k: int, min_targets: int = 1, since_ms: int | None = None,
                        seed: int | np.random.Generator | None = None, min_llms: int = 2,
                        max_targets: int | None = None, cuts_since: int | None = None,
                        comparisons: dict | None = None) -> list[TrainingSample]:
        """Training samples for recently active users (a turn at or after ``since_ms``), each cut at or after
        ``cuts_since`` when given; see graphstore.sampler for the exact rules. Per batch of users it reads each
        user's possible targets without their turns (cypher.USER_COMPARISONS), draws the cut as graphstore.sampler.
        sample_user draws it from the whole history (the same samples from the same ``seed``), and then reads only
        the sample's turns: the newest ``k`` before the cut and the targets'. ``comparisons``: a dict the possible
        targets read are kept in, so that further passes over the same users (a trainer cycle draws three) read
        only the samples' turns; the same samples as without it."""
        from graphstore.sampler import sample_at

        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        pool = [u for u, _ in self.active_users(since_ms)]
        order = [pool[j] for j in rng.permutation(len(pool))]
        known = {} if comparisons is None else comparisons
        out: list[TrainingSample] = []
        step = max(1, min(self.batch_size, 256))
        for i in range(0, len(order), step):
            plans = self._draw_cuts(order[i:i + step], rng, n_users - len(out), min_targets, min_llms, max_targets,
                                    cuts_since, known)
            bounds = [{"uid": u, "since": cut} for u, (cut, _) in plans.items()]
            before: dict[str, list[list]] = {u: [] for u in plans}
            at: dict[str, list[list]] = {u: [] for u in plans}
            if k > 0 and bounds:
                self._turn_rows(cypher.TURNS_BEFORE, cypher.TURNS_BEFORE_EMB, {"bounds": bounds, "k": int(k)}, before)
            groups = [{"uid": u, "pos": p} for u, (_, keys) in plans.items() for p in dict.fromkeys(keys.values())]
            for part in chunks(groups, self.batch_size):
                self._turn_rows(cypher.TURNS_AT, cypher.TURNS_AT_EMB, {"groups": list(part)}, at)
            out += [sample_at(u, before[u], at[u], k, cut, keys, min_llms) for u, (cut, keys) in plans.items()]
            if len(out) >= n_users:
                break
        return out

    def _draw_cuts(self, user_ids: Sequence[str], rng: np.random.Generator, most: int, min_targets: int,
                   min_llms: int, max_targets: int | None, since: int | None, known: dict,
                   ) -> dict[str, tuple[int, dict[tuple, str]]]:
        """{user: (cut, {target key (conversation, turn index, query key): its position})} for the first ``most``
        of ``user_ids`` (in order) with an admissible cut (at or after ``since`` when given), drawn from their
        comparisons (graphstore.sampler.cut_times, one ``rng`` draw per such user, in order, as sample_user draws
        it). Only the comparisons from ``since`` on are read: a cut there has no target before it. ``known``: the
        comparisons read before (sample_training's ``comparisons``), read again for no user."""
        from graphstore.sampler import cut_times

        bound = int(since or 0)
        read = known.setdefault((int(min_llms), bound), {})
        missing = [u for u in dict.fromkeys(user_ids) if u not in read]
        for part in chunks(missing, self.batch_size):
            params = {"uids": list(part), "min_llms": int(min_llms), "since": bound}
            found: dict[str, list[tuple]] = {u: [] for u in part}
            first: dict[str, int] = {}
            for uid, t0, conv, idx, qkey, pos, start in self._read(cypher.USER_COMPARISONS, params):
                first[uid] = int(t0)
                found[uid].append((int(start), qkey, conv, int(idx), pos))
            # by (start, query key), as the sampled groups are
            read.update({u: (first.get(u, 0), sorted(found[u])) for u in part})
        plans: dict[str, tuple[int, dict[tuple, str]]] = {}
        for u in user_ids:
            first_ts, targets = read[u]
            if len(plans) >= most or not targets:
                continue
            cuts = cut_times([c[0] for c in targets], first_ts, min_targets)
            if cuts:
                cut = cuts[int(rng.integers(len(cuts)))]
                chosen = [c for c in targets if c[0] >= cut][:max_targets]
                plans[u] = (cut, {(conv, idx, qkey): pos for _, qkey, conv, idx, pos in chosen})
        return plans

    def serving_samples(self, user_ids: Sequence[str], k: int, after_ms: int | Mapping[str, int],
                        min_llms: int = 2, llms: Collection[str] | None = None,
                        until_ms: Mapping[str, int] | None = None) -> list[TrainingSample]:
        """The users' comparisons from ``after_ms`` on (one time for all, or per user: the live watch's marks),
        before ``until_ms`` (per user, when given) and comparing one of ``llms`` (when given), each with the
        history a router serving it reads (see graphstore.sampler.serving_samples): what the periodic trainer's
        promotion judge and live watch score, and its level offsets are fitted on. Per batch of users it reads
        what those samples read, not every stored turn: the turns from each user's bound on and the newest ``k``
        before it; for the counts of a user with older turns than those, the user's kept counts and the rated
        answers of the comparisons known since the bound, without their text (PastCounts.from_kept)."""
        from graphstore.sampler import serving_samples

        def after(u: str) -> int:
            return int(after_ms[u]) if isinstance(after_ms, Mapping) else int(after_ms)

        def until(u: str) -> int | None:
            return None if until_ms is None else int(until_ms[u])

        users = list(dict.fromkeys(user_ids))
        out = []
        for i in range(0, len(users), self.batch_size):
            part = users[i:i + self.batch_size]
            bounds = [{"uid": u, "since": after(u)} for u in part]
            rows: dict[str, list[list]] = {u: [] for u in part}
            self._turn_rows(cypher.TURNS_SINCE, cypher.TURNS_SINCE_EMB, {"bounds": bounds}, rows)
            news = {u: len(rows[u]) for u in part}
            if k > 0:
                self._turn_rows(cypher.TURNS_BEFORE, cypher.TURNS_BEFORE_EMB, {"bounds": bounds, "k": int(k)}, rows)
            counters = self._past_counts([b for b in bounds if len(rows[b["uid"]]) - news[b["uid"]] >= k])
            for u in part:  # a user whose turns were all read is counted from them
                out += serving_samples(u, rows[u], k, after(u), min_llms, llms, until(u), counter=counters.get(u))
        return out

    def _past_counts(self, bounds: list[dict]) -> dict[str, PastCounts]:
        """{user: graphstore.sampler.PastCounts from their bound on} for ``bounds`` ([{uid, since}]), from one read:
        the user's kept counts and the rated answers of the comparisons known since the bound."""
        from graphstore.sampler import PastCounts

        if not bounds:
            return {}
        kept: dict[str, dict[str, tuple[float, float]]] = {b["uid"]: {} for b in bounds}
        rated: dict[str, list] = {b["uid"]: [] for b in bounds}
        for uid, conv, idx, llm, x, y, z in self._read(cypher.USER_RATED_SINCE_AND_KEPT, {"bounds": bounds}):
            if conv is None:
                kept[uid][llm] = (float(x), float(y))
            else:
                rated[uid].append((conv, idx, llm, x, y, z))
        return {b["uid"]: PastCounts.from_kept(rated[b["uid"]], kept[b["uid"]], b["since"]) for b in bounds}

    # --- audit ------------------------------------------------------------------------------------
    def user_history(self, user_id: str, limit: int = 50) -> list[dict]:
        """The user's timeline, newest first: turns (query, LLM, response, rating, feedback events) and the
        routing decisions made for them; each item has ``kind`` 'turn' or 'decision'."""
        turns: dict[str, dict] = {}
        for (tid, conv, idx, ts, llm, qtext, rtext, rating,
             fid, fkind, fts, frating, fturn) in self._read(cypher.HISTORY_TURNS, {"user_id": user_id,
                                                                                   "limit": int(limit)}):
            t = turns.setdefault(tid, {"kind": "turn", "turn_id": tid, "conversation_id": conv, "turn_index": idx,
                                       "ts": ts, "llm_id": llm, "query": qtext, "response": rtext,
                                       "rating": rating, "feedback": []})
            if fid is not None:
                t["feedback"].append({"feedback_id": fid, "kind": fkind, "ts": fts, "rating": frating,
                                      "rejected": fturn != tid})
        for t in turns.values():
            t["feedback"].sort(key=lambda f: (f["ts"], f["feedback_id"]))
        decisions = [self._decision_dict(r) for r in self._read(cypher.HISTORY_DECISIONS,
                                                                {"user_id": user_id, "limit": int(limit)})]
        items = [*turns.values(), *decisions]
        items.sort(key=lambda x: (x["ts"] or 0, x.get("turn_id") or x.get("request_id")), reverse=True)
        return items[:limit]

    @staticmethod
    def _decision_dict(r: list) -> dict:
        rid, ts, chosen, version, scores, turn_ids, latency, fallback, error, scorer, explain = r
        return {"kind": "decision", "request_id": rid, "ts": ts, "chosen_llm_id": chosen, "model_version": version,
                "scorer": scorer, "scores": json.loads(scores) if scores else {}, "turn_ids": list(turn_ids or []),
                "latency_ms": latency, "fallback": bool(fallback), "error": error,
                "explain": json.loads(explain) if explain else {}}

    def decision(self, request_id: str) -> dict | None:
        """One decision with the turns it used (text, LLM, rating), or None if unknown."""
        found = self._read(cypher.DECISION, {"request_id": request_id})
        if not found:
            return None
        rid, user_id, *rest = found[0]
        d = self._decision_dict([rid, *rest])
        d["user_id"] = user_id
        used = {r[0]: {"turn_id": r[0], "conversation_id": r[1], "turn_index": r[2], "ts": r[3], "llm_id": r[4],
                       "query": r[5], "response": r[6], "rating": r[7]}
                for r in self._read(cypher.DECISION_TURNS, {"request_id": request_id})}
        # in the order the scorer listed them; a turn not (yet) stored is named but has no content
        d["turns"] = [used.get(t, {"turn_id": t, "missing": True}) for t in d["turn_ids"]]
        return d
