"""The second benchmark: user families generated differently from the default simulator.

The default simulator (trainer/simulate.py) gives every user the same kind of taste (correctness, price,
a hidden 3-d style, a topic bonus). Here each user belongs to one family, and each family's taste depends
on something else a router has to read from the graph (docs/simulator.md, "Families"):

- ``attributes``: size, price and specialty of the LLM, which the router only sees in the description text;
- ``topic``: a favourite and a disliked LLM for each of the user's main topics;
- ``followup``: in a conversation, the user sticks with the LLM they preferred on the previous turn;
- ``drift``: the user's taste for each LLM changes abruptly once, somewhere in their history;
- ``noisy``: plain per-LLM taste, but ratings with three times the noise;
- ``sparse``: plain per-LLM taste and only 6-15 turns.

Outcomes are the same real 0/1 correctness of 9 LLMs on 5,608 queries (../shared/data/llmrouter), and the
output files have the same format, so `prefstream eval` runs on them unchanged. User ids start with their
family (``topic-0042``); ``users.json`` maps every user to its family.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.simulate import DEFAULT_DATA_DIR, FEEDBACK_KINDS, LLMRouterData, SimConfig, Simulator

FAMILIES = ("attributes", "topic", "followup", "drift", "noisy", "sparse")

#: what each LLM's description says it is best at (read from llm_candidates.json by hand)
SPECIALTY = {"codegemma-7b": "code", "llama3-chatqa-1.5-8b": "qa", "llama3-chatqa-1.5-70b": "qa",
             "llama-3.1-8b-instruct": "reasoning", "llama-3.3-nemotron-super-49b-v1": "reasoning",
             "llama-3.1-nemotron-51b-instruct": "qa", "mistral-7b-instruct-v0.3": "instructions",
             "gemma-2-9b-it": "instructions", "qwen2.5-7b-instruct": "instructions"}
#: which specialty a task calls for
TASK_NEEDS = {"mbpp": "code", "human_eval": "code", "math": "reasoning", "gsm8k": "reasoning", "gpqa": "reasoning",
              "natural_qa": "qa", "trivia_qa": "qa", "commonsense_qa": "qa", "openbook_qa": "qa", "mmlu": "qa",
              "arc_challenge": "qa"}


@dataclass(frozen=True)
class FamilyConfig:
    seed: int = 0
    n_users: int = 600  # seen in training, spread evenly over the families
    n_new_users: int = 120  # only in the test file
    unseen_query_frac: float = 0.1
    unseen_query_prob: float = 0.3
    frac_train: float = 0.7
    frac_valid: float = 0.1
    k_max: int = 3
    turns_min: int = 30
    turns_max: int = 90


@dataclass
class FamilyUser:
    """Hidden parameters of one user (the router never sees them)."""

    user_id: str
    family: str
    quality_w: float  # weight on real correctness
    topics: np.ndarray  # [n_tasks]
    taste0: np.ndarray  # [M] per-LLM taste before the switch
    taste1: np.ndarray  # [M] after it (== taste0 unless drifting)
    switch: float  # position in the timeline where taste0 becomes taste1
    topic_taste: dict[tuple[int, int], float]  # (task, llm) -> bonus
    stick: float  # bonus for the LLM preferred on the previous turn of the conversation
    noise: float
    feedback: str
    leniency: float
    n_turns: int
    new: bool = False
    conv_lengths: tuple[int, ...] = (1, 2, 3)
    extra: dict = field(default_factory=dict)

    def taste(self, progress: float) -> np.ndarray:
        return self.taste1 if progress >= self.switch else self.taste0


def _size_billions(size: str) -> float:
    m = re.match(r"([\d.]+)\s*[Bb]", str(size))
    return float(m.group(1)) if m else float("nan")


class FamilySimulator(Simulator):
    """Seeded users of the six families over the real outcomes; same outputs as :class:`Simulator`."""

    kind = "families"

    def __init__(self, config: FamilyConfig | None = None, data: LLMRouterData | None = None,
                 data_dir: Path | str = DEFAULT_DATA_DIR):
        self.config = config = config or FamilyConfig()
        self.data = d = data or LLMRouterData.load(data_dir)
        rng = np.random.default_rng(config.seed)
        n_m = d.correct.shape[1]
        po = d.price_out
        self.price_norm = (po - po.min()) / max(float(po.max() - po.min()), 1e-9)
        cands = json.loads((Path(data_dir) / "llm_candidates.json").read_text())
        size = np.log(np.array([_size_billions(cands[m].get("size", "")) for m in d.llm_ids]))
        self.size_z = (size - size.mean()) / size.std()
        self.price_z = (po - po.mean()) / po.std()
        self.specialty = [SPECIALTY.get(m, "") for m in d.llm_ids]
        needs = [TASK_NEEDS.get(t, "instructions") for t in d.task_names]
        self.match = np.array([[float(self.specialty[m] == needs[t]) for m in range(n_m)]
                               for t in range(len(d.task_names))])  # [n_tasks, M]
        self._hold_back_queries(rng, config.unseen_query_frac)
        fams = [FAMILIES[i % len(FAMILIES)] for i in range(config.n_users)]
        news = [FAMILIES[i % len(FAMILIES)] for i in range(config.n_new_users)]
        self.users = [self._family_user(rng, i, f, new=False) for i, f in enumerate(fams)]
        self.users += [self._family_user(rng, i, f, new=True) for i, f in enumerate(news)]
        self.user_index = {u.user_id: i for i, u in enumerate(self.users)}

    def _family_user(self, rng: np.random.Generator, i: int, family: str, new: bool) -> FamilyUser:
        cfg, d = self.config, self.data
        n_t, n_m = len(d.task_names), len(d.llm_ids)
        topics = rng.dirichlet(np.full(n_t, 0.4))
        plain = rng.normal(0.0, 1.0, n_m)
        taste0 = taste1 = plain * (0.3 if family in ("attributes", "topic", "followup") else 1.0)
        topic_taste: dict[tuple[int, int], float] = {}
        stick, switch, noise = 0.0, 2.0, float(rng.uniform(0.2, 0.5))
        n_turns = int(rng.integers(cfg.turns_min, cfg.turns_max + 1))
        lengths: tuple[int, ...] = (1, 2, 3)
        if family == "attributes":
            w_size, w_price, w_spec = rng.normal(0, 1.0), rng.normal(0, 1.0), rng.uniform(0.5, 1.5)
            taste0 = taste1 = taste0 + w_size * self.size_z - w_price * self.price_z
            for t in range(n_t):
                for m in range(n_m):
                    if self.match[t, m]:
                        topic_taste[(t, m)] = float(w_spec)
        elif family == "topic":
            for t in np.argsort(-topics)[:4]:
                fav, bad = rng.choice(n_m, 2, replace=False)
                topic_taste[(int(t), int(fav))] = float(rng.uniform(1.0, 2.0))
                topic_taste[(int(t), int(bad))] = -float(rng.uniform(1.0, 2.0))
        elif family == "followup":
            stick = float(rng.uniform(1.0, 2.0))
            lengths = (2, 3, 4)
        elif family == "drift":
            taste1 = rng.normal(0.0, 1.0, n_m)
            switch = float(rng.uniform(0.3, 0.7))
        elif family == "noisy":
            noise = float(rng.uniform(1.0, 1.6))
        elif family == "sparse":
            n_turns = int(rng.integers(6, 16))
        return FamilyUser(
            user_id=f"{'new-' if new else ''}{family}-{i:04d}", family=family,
            quality_w=float(rng.lognormal(np.log(1.5), 0.3)), topics=topics, taste0=taste0, taste1=taste1,
            switch=switch, topic_taste=topic_taste, stick=stick, noise=noise,
            feedback=FEEDBACK_KINDS[rng.choice(3, p=[0.4, 0.3, 0.3])], leniency=float(rng.normal(0.8, 0.4)),
            n_turns=n_turns, new=new, conv_lengths=lengths)

    def utility(self, user: FamilyUser, query_idx: int, progress: float, prev_pick: int | None = None,
                prev_llms: list[int] | None = None) -> np.ndarray:
        """[M] noiseless utility of each LLM's answer; ``prev_pick`` is the LLM the user preferred on the
        previous turn of the conversation (among ``prev_llms``)."""
        d = self.data
        u = user.quality_w * d.correct[query_idx] + user.taste(progress)
        task = int(d.tasks[query_idx])
        for (t, m), b in user.topic_taste.items():
            if t == task:
                u[m] += b
        if prev_pick is not None and user.stick:
            u[prev_pick] += user.stick
            for m in prev_llms or []:
                if m != prev_pick:
                    u[m] -= 0.5 * user.stick
        return u.astype(np.float32)

    @staticmethod
    def _conversation_length(rng: np.random.Generator, user: FamilyUser) -> int:
        return int(rng.choice(user.conv_lengths))

    def _turn_utility(self, user: FamilyUser, q: int, progress: float, llms: list[int],
                      prev: tuple[int, np.ndarray] | None) -> np.ndarray:
        """[M] utilities of this turn, given the LLM the user preferred on the previous turn (if any)."""
        pick = None if prev is None else llms[int(np.argmax(prev[1]))]
        return self.utility(user, q, progress, pick, llms)

    def new_request(self, user_id: str, rng: np.random.Generator):
        raise NotImplementedError("the families benchmark is offline only (its follow-up users need a conversation)")

    def _write_files(self, out_dir: Path) -> dict[str, Path]:
        paths = super()._write_files(out_dir)
        paths["users"] = out_dir / "users.json"
        paths["users"].write_text(json.dumps({u.user_id: u.family for u in self.users}, indent=0))
        return paths

    def families(self) -> dict[str, str]:
        return {u.user_id: u.family for u in self.users}


def make_simulator(kind: str, seed: int = 0, data_dir: Path | str = DEFAULT_DATA_DIR, **sizes) -> Simulator:
    """The benchmark's generator: ``kind`` "families" (this module) or "default" (trainer/simulate.py), with
    ``sizes`` (n_users, n_new_users, turns_min, turns_max) overriding that generator's own defaults."""
    if kind == "families":
        return FamilySimulator(FamilyConfig(seed=seed, **sizes), data_dir=data_dir)
    if kind == "default":
        return Simulator(SimConfig(seed=seed, **sizes), data_dir=data_dir)
    raise ValueError(f"unknown benchmark generator {kind!r} (default or families)")


def write_benchmark(kind: str, out: Path, seed: int = 0, **sizes) -> Simulator:
    """:func:`make_simulator`'s files in ``out``: written unless that draw's are there (a folder holding another
    draw's raises :class:`~trainer.simulate.DrawMismatch`); returns the simulator."""
    sim = make_simulator(kind, seed, **sizes)
    if not sim.holds_draw(out):
        sim.write_gmtrouter(out)
    return sim
