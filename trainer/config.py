"""The model's and the training's configuration: plain dataclasses (no torch), so the command line can
show their defaults without importing the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


MEMORY_SPACES = ("text", "topics", "both")
LR_SCHEDULES = ("cosine", "constant")
LLM_PRICE_FEATURES = 2  # log(1 + price) per million input and output tokens (trainer.graph.llm_vector)


@dataclass
class GMTRouterConfig:
    emb_dim: int = 384  # frozen sentence-encoder width (queries and LLM descriptions)
    hidden: int = 64
    topics: int = 16  # soft topics a query is read through (a bottleneck: query texts are not memorised)
    pref_dim: int = 16  # features of the per-user Bradley-Terry posterior
    layers: int = 2  # HGT layers: 2 single-turn, 3 multi-turn (context travels along the turn chain)
    heads: int = 4
    dropout: float = 0.1
    head: str = "cross"  # "cross" (LLM attends to [user, query]) or "dot"
    use_hgt: bool = True  # False: the user state is zero (no graph encoder)
    personal: bool = True  # the Bayesian Bradley-Terry posterior of the user's comparisons
    memory: bool = True  # similarity-weighted average of the user's past ratings of the candidate
    memory_space: str = "text"  # what that similarity compares: "text" (the queries' sentence embeddings),
    #                             "topics" (their learned topic memberships, trained with the rest) or "both"
    #                             (the text similarity times a learned power of the topics' similarity)
    counts: bool = True  # the same over all of the user's past queries (a per-user win count)
    # the user's ratings of the candidate at their own level (a thumbs-up, a score) minus a learned constant, the
    # older ones down-weighted by a learned recency: what a rating says beyond beating its sibling
    # (bench/results/levels_term_draws.md, quality.md)
    levels: bool = True
    # the levels term's constant is the LLM's own, c_m = sigmoid(shared + a linear map of the LLM's input), so a
    # thumbs-up reads against how that LLM is rated by everyone, not against one level for all LLMs
    level_center_llm: bool = False
    # each rating is also read against the user's own recency-weighted level over all LLMs (a share of it, learned):
    # a lenient user's thumbs-ups say less, and an LLM shown often is not favoured by the user's leniency alone
    level_leniency: bool = False
    gates: bool = True  # evidence weights shifted per user by the (rating-blind) HGT state and history length
    prior_gate: bool = True  # the posterior's prior strength scaled per user by the same rating-blind inputs
    # the prior_gate scales each feature's prior strength separately (which taste dimensions this user's graph
    # suggests they have), not one strength for all; rating-blind as well (bench/results/sweep.md: no gain; off)
    prior_gate_features: bool = False
    structure: bool = False  # the gates also read the share of the user's visible turns that follow a previous
    #                          turn (bench/results/sweep.md: steadier follow-up users across seeds, same means; off)
    robust_prior: bool = False  # the posterior's prior turns linear beyond a learned width (trainer/preference.py)
    # the posterior's recency weight is a learned mix of two exponentials in the comparison's age, a short and a
    # long one, instead of one (trainer/preference.py); rating-blind either way (bench/results/sweep.md: noisy
    # users gain what drifting ones lose; off)
    two_scale_recency: bool = False
    conversation: bool = True  # the candidate's rating on the previous turn of the request's conversation
    crowd: bool = True  # other users' centred ratings of the candidate on the same query text (trainer/crowd.py)
    reverse_edges: bool = False
    # the LLM's input is its description embedding and its log input and output prices (trainer.graph.llm_vector),
    # not the embedding alone, so a price weight can carry over to an LLM by its price. bench/results/sweep.md: no gain
    # on either benchmark, whose descriptions already tell the LLMs apart. new_llm.md: +2 pts on the pairs of an
    # expensive LLM that training never saw. Off.
    llm_prices: bool = False
    hgt_ratings: bool = False  # diagnostic only: response nodes carry the ratings into the HGT (breaks the sign guarantee)

    @property
    def llm_dim(self) -> int:
        """Width of an LLM's input vector: the description embedding, then the prices with ``llm_prices``."""
        return self.emb_dim + (LLM_PRICE_FEATURES if self.llm_prices else 0)

    def __post_init__(self) -> None:
        if self.memory_space not in MEMORY_SPACES:
            raise ValueError(f"GMTRouterConfig.memory_space is one of {MEMORY_SPACES}, got {self.memory_space!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GMTRouterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GMTRouterConfig fields {unknown} (a checkpoint of another model version?)")
        return cls(**{"crowd": False, "gates": False, "prior_gate": False, "structure": False, "robust_prior": False,
                      "levels": False, "level_leniency": False, **d})  # a checkpoint from before these terms has none



@dataclass
class TrainConfig:
    model: GMTRouterConfig = field(default_factory=GMTRouterConfig)
    steps: int = 2000  # the validation-chosen step stays near the end (best_step in bench/results/quality.json)
    batch_size: int = 64  # samples (users) per step
    lr: float = 2e-3
    # after a linear warm-up over the first 5 % of the steps: "cosine", a cosine decay to 5 % of ``lr`` at the last
    # step; "constant", ``lr`` to the end (trainer.train.lr_factor; bench/results/sweep.md: no gain)
    lr_schedule: str = "cosine"
    weight_decay: float = 1e-4
    k_min: int = 0  # visible turns are resampled in [k_min, k_max] every step
    k_max: int = 160  # >= settings.history_turns: trained on at least the history routers serve (tests check it)
    loss: str = "bt"  # "bt": pairwise Bradley-Terry, ties skipped; "bce": per-answer BCE on ratings
    eval_every: int = 75
    # > 0: validate and keep a Polyak (exponential moving) average of the weights with this decay per step
    # instead of the raw weights; 0: off (the raw weights, as before)
    ema: float = 0.0
    max_valid: int = 3000  # validation samples scored at each evaluation (a fixed, seeded subset)
    # a sample's later targets read its earlier targets as their conversation's previous turns (the
    # conversation term), as when served in order (trainer.train.chain_conversations); False: each target reads
    # only the history cut before the sample's first target (the training of checkpoints before session 32)
    chain_targets: bool = True
    # a training sample's targets are the next ``stride`` groups after its history cut
    # (trainer.data.training_samples); 1: every target reads all the turns before it, as when served
    stride: int = 4
    # True: torch's deterministic kernels are on while fit trains, so the same inputs and seed give the same
    # weights to the bit with any number of threads; False: torch's default kernels, whose CPU backward of a
    # gather adds into shared rows in thread order (bench/train_determinism.py times both)
    deterministic: bool = True
    # > 0: after every optimizer step each weight moves lr_t * anchor of the way back to its value when training
    # started (an L2 pull decoupled from Adam's scaling, as AdamW decouples weight decay): a refresh from the
    # serving model keeps what that model learned from data the refresh does not see (trainer.refresh.refit_config)
    anchor: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema < 1.0:  # 1 would keep the initial weights forever
            raise ValueError(f"TrainConfig.ema is a decay per step in [0, 1), got {self.ema}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule is one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.anchor < 0:
            raise ValueError(f"TrainConfig.anchor is a pull towards the initial weights, >= 0, got {self.anchor}")
        if self.stride < 1:
            raise ValueError(f"TrainConfig.stride is a number of target groups per sample, >= 1, got {self.stride}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = GMTRouterConfig.from_dict(d.get("model", {}))
        d.setdefault("chain_targets", False)  # configs written before the field existed trained without it
        return cls(**d)
