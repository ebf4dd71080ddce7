"""The one definition of the graph's shape.

The Cypher in this package and the PyG ``HeteroData`` builder in ``trainer`` both read these names,
so the stored graph and the model's graph cannot drift apart (see ../shared/design/gmtrouter.md).

Stored graph (every node keyed by a business id, never by the database's internal id)::

    (:Query)-[:ASKED_IN]->(:Turn)      (:LLM)-[:ANSWERED]->(:Turn)
    (:Response)-[:ANSWER_OF]->(:Turn)  (:Turn)-[:BY]->(:User)
    (:Turn)-[:FOLLOWS]->(:Turn)        # a turn points at the previous turn of its conversation
    (:Feedback)-[:RATES]->(:Response)
    (:Decision)-[:FOR]->(:User)  (:Decision)-[:CHOSE]->(:LLM)  (:Decision)-[:USED]->(:Turn)

Model graph: node types ``user, llm, query, response, turn``; edges point into ``turn`` or ``user``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 1


class Label:
    USER = "User"
    LLM = "LLM"
    QUERY = "Query"
    RESPONSE = "Response"
    TURN = "Turn"
    FEEDBACK = "Feedback"
    DECISION = "Decision"
    META = "Meta"  # facts about the graph itself (the embedding space of its query vectors)


class Rel:
    ASKED_IN = "ASKED_IN"  # Query -> Turn
    ANSWERED = "ANSWERED"  # LLM -> Turn
    ANSWER_OF = "ANSWER_OF"  # Response -> Turn
    BY = "BY"  # Turn -> User
    FOLLOWS = "FOLLOWS"  # Turn -> previous Turn of the same conversation
    RATES = "RATES"  # Feedback -> Response
    FOR = "FOR"  # Decision -> User
    CHOSE = "CHOSE"  # Decision -> LLM
    USED = "USED"  # Decision -> Turn
    WIN_COUNT = "WIN_COUNT"  # User -> LLM: the user's pairwise (wins, games) of that LLM, kept by the writes


#: The key property of each label: MERGE on it, index / constrain it.
KEYS: dict[str, str] = {
    Label.USER: "user_id",
    Label.LLM: "llm_id",
    Label.QUERY: "query_key",
    Label.RESPONSE: "response_id",
    Label.TURN: "turn_id",
    Label.FEEDBACK: "feedback_id",
    Label.DECISION: "request_id",
    Label.META: "key",
}

# --- Model graph (PyG HeteroData) --------------------------------------------------------------
NODE_TYPES: tuple[str, ...] = ("user", "llm", "query", "response", "turn")
#: (src, relation, dst): the GMTRouter edges, all pointing into turn or user.
EDGE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("query", "asked_in", "turn"),
    ("llm", "answered", "turn"),
    ("response", "answer_of", "turn"),
    ("turn", "by", "user"),
    ("turn", "follows", "turn"),
)


def query_key(text: str) -> str:
    """Content hash of a query text: one Query node per distinct text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class LLMInfo:
    """A candidate LLM as the scorer sees it."""

    llm_id: str
    description: str
    price_in: float  # USD per million input tokens
    price_out: float  # USD per million output tokens
    embedding: np.ndarray  # [D] float32, frozen sentence-encoder embedding of the description


@dataclass
class UserSubgraph:
    """A user's last turns, oldest first, ready to become tensors.

    T = number of turns, D = encoder width. ``rating`` is NaN where no feedback has arrived yet.
    ``prev[i]`` is the index (in this subgraph) of the previous turn of turn i's conversation, or -1.
    """

    user_id: str
    turn_ids: list[str] = field(default_factory=list)  # [T]
    conversation_ids: list[str] = field(default_factory=list)  # [T]
    llm_ids: list[str] = field(default_factory=list)  # [T]
    query_keys: list[str] = field(default_factory=list)  # [T]
    turn_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [T]
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [T] epoch ms
    query_emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # [T, D]
    rating: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [T], NaN = none
    prev: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [T], -1 = none
    # (wins, games) per LLM over the user's whole past, when the reader asked for it (the count-based scorer
    # does); None: count the rated turns above
    win_counts: dict[str, tuple[float, float]] | None = None

    def __len__(self) -> int:
        return len(self.turn_ids)


@dataclass
class HeldOutGroup:
    """A later comparison of one user: K LLMs answered one query, with the user's ratings.

    Used as a training / evaluation target; it is never part of the visible subgraph.
    """

    user_id: str
    query_key: str
    query_emb: np.ndarray  # [D]
    llm_ids: list[str]  # [K]
    ratings: np.ndarray  # [K] float32 in [0, 1]
    timestamp: int  # epoch ms; later than every visible turn of the same sample
    conversation_id: str | None = None  # the conversation it continues (its earlier turns may be visible)
    turn: int | None = None  # 1-based turn of that conversation, when known
    crowd: np.ndarray | None = None  # [K] other users' centred ratings of each LLM on this query (trainer/crowd.py)


@dataclass
class TrainingSample:
    """One user's visible history and the later comparisons to predict from it."""

    visible: UserSubgraph
    targets: list[HeldOutGroup]
