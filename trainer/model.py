"""The GMTRouter scorer: an HGT encoder over users' recent turns and a cross-attention scoring head.

    visible turns ──► TurnEncoder (query, LLM, feedback, rating x LLM, rating x query) ─┐
    query / llm / response nodes ──► per-type projections ──────────────────────────────┤
                                                                                        ▼
                                              HGTConv x L (heads, LayerNorm, dropout): turn ─► user
    request (query q, candidate LLM m):
        m attends over [h_user, q]  ─┐
        q ⊙ m  (content match)      ─┼─► MLP ─► score
        PersonalMemory(q, m, turns) ─┘   (similarity-weighted past ratings of m on queries like q)

No per-user parameters: a user is only the edges of its turns, so new users and new LLMs (described by
their description embedding) are scored without retraining. ``head="dot"`` and ``use_user=False`` give
the ablations used as baselines (dot-product head; GraphRouter-like model without user nodes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import HGTConv
from torch_geometric.utils import scatter

from trainer.graph import RESPONSE_FEATURES, TURN_FEATURES, GraphBatch, metadata
from trainer.hgt_fast import hgt_forward

MEMORY_FEATURES = 6


@dataclass
class GMTRouterConfig:
    emb_dim: int = 384  # frozen sentence-encoder width
    hidden: int = 64  # 64 kept training under 10 min on 2 shared cores (bench/quality.py); not width-swept
    layers: int = 2  # 2 single-turn, 3 multi-turn (context travels along the turn chain)
    heads: int = 4
    dropout: float = 0.1
    head: str = "cross"  # "cross" (LLM attends to [user, query]) or "dot"
    use_user: bool = True  # False: no user information at all (GraphRouter-like ablation)
    memory: bool = True  # similarity-weighted summary of the user's past ratings per candidate
    ridge_dim: int = 16  # >0: per-user linear preferences solved in closed form on the visible turns
    reverse_edges: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class TurnEncoder(nn.Module):
    """Initial turn state from what happened in it, so messages into the user say
    "this LLM did well / badly on this kind of query" instead of a bare rating."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.q = nn.Linear(cfg.emb_dim, h)
        self.m = nn.Linear(cfg.emb_dim, h)
        self.mlp = nn.Sequential(nn.Linear(4 * h + RESPONSE_FEATURES + TURN_FEATURES, h), nn.GELU(), nn.Linear(h, h))

    def forward(self, xq: Tensor, q_idx: Tensor, xm: Tensor, m_idx: Tensor, resp: Tensor, recency: Tensor) -> Tensor:
        # xq [NQ, D], xm [NM, D]: query / LLM node embeddings, projected once per node, then gathered per turn
        # (q_idx, m_idx: [T]); resp: [T, F]; recency: [T, TURN_FEATURES]
        q, m = self.q(xq)[q_idx], self.m(xm)[m_idx]
        signed = resp[:, :1] + resp[:, 4:5]  # centered rating (+ deviation from the user's mean)
        return self.mlp(torch.cat([q, m, signed * m, signed * q, resp, recency], dim=-1))  # [T, H]


class PersonalMemory(nn.Module):
    """For each (candidate m, request query q): how the user rated m (or LLMs described like m) before,
    weighted by how similar the past query was to q. Cheap, inductive, and it uses the latest feedback."""

    def __init__(self, tau_q: float = 5.0, tau_m: float = 20.0, prior: float = 0.5):
        super().__init__()
        self.log_tau_q = nn.Parameter(torch.tensor(float(tau_q)).log())
        self.log_tau_m = nn.Parameter(torch.tensor(float(tau_m)).log())
        self.prior = prior  # pseudo-count that shrinks sparse evidence towards 0

    def forward(self, b: GraphBatch) -> Tensor:
        n_c = b.cand.size(0)
        if b.mem_cand.numel() == 0:
            return b.cand.new_zeros(n_c, MEMORY_FEATURES)
        turn = b.data["turn"]
        resp = b.data["response"].x[b.mem_turn]  # [P, F]
        # similarities as small dense matmuls, then scalar gathers (no [P, D] gathers)
        req = b.cand_req[b.mem_cand]  # [P]
        sim_q = F.normalize(b.query, dim=-1) @ F.normalize(b.data["query"].x, dim=-1).T  # [B, NQ]
        sim_m = F.normalize(b.cand_unique, dim=-1) @ F.normalize(b.data["llm"].x, dim=-1).T  # [N_u, NM]
        cos_q = sim_q[req, turn.query_idx[b.mem_turn]]  # [P]
        cos_m = sim_m[b.cand_inv[b.mem_cand], turn.llm_idx[b.mem_turn]]  # [P]
        w_q = torch.exp(self.log_tau_q.exp() * (cos_q - 1.0))
        w_m = torch.exp(self.log_tau_m.exp() * (cos_m - 1.0))
        rec = b.data["turn"].x[b.mem_turn, 0]
        rc, dev = resp[:, 0], resp[:, 4]

        def avg(w: Tensor, v: Tensor) -> Tensor:
            num = scatter(w * v, b.mem_cand, 0, dim_size=n_c, reduce="sum")
            den = scatter(w, b.mem_cand, 0, dim_size=n_c, reduce="sum")
            return num / (den + self.prior)

        wqm = w_q * w_m
        mass_qm = scatter(wqm, b.mem_cand, 0, dim_size=n_c, reduce="sum")
        mass_m = scatter(w_m, b.mem_cand, 0, dim_size=n_c, reduce="sum")
        return torch.stack([avg(wqm, rc), avg(w_m, rc), avg(wqm, dev), avg(w_m, dev), avg(w_m * rec, rc + dev),
                            torch.log1p(mass_qm) - torch.log1p(mass_m)], dim=-1)  # [N_c, MEMORY_FEATURES]


class PersonalRidge(nn.Module):
    """Per-user preferences without per-user parameters: a shared feature map phi(query, LLM) [F] is
    learned end to end, and each user's weights w_u [F] are the ridge-regression fit of the user's
    visible within-comparison rating differences on phi (one batched F x F solve, recent turns weigh more).
    The personal score of a candidate is <phi(q, m), w_u>: few turns -> strong shrinkage -> near zero."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h, f = cfg.hidden, cfg.ridge_dim
        self.q = nn.Linear(cfg.emb_dim, h)
        self.m = nn.Linear(cfg.emb_dim, h)
        self.phi = nn.Sequential(nn.Linear(3 * h, h), nn.GELU(), nn.Linear(h, f))
        self.log_lam = nn.Parameter(torch.tensor(0.0))  # ridge strength
        self.log_tau = nn.Parameter(torch.tensor(0.0))  # recency decay, in units of 100 turns
        self.scale = nn.Parameter(torch.tensor(4.0))

    def features(self, q: Tensor, q_idx: Tensor, m: Tensor, m_idx: Tensor) -> Tensor:
        """phi for pairs (q[q_idx], m[m_idx]); the linear maps run once per distinct row."""
        qh, mh = self.q(q)[q_idx], self.m(m)[m_idx]
        return self.phi(torch.cat([qh, mh, qh * mh], dim=-1))

    def forward(self, b: GraphBatch) -> Tensor:
        n_c = b.cand.size(0)
        data, turn = b.data, b.data["turn"]
        n_user, f = data["user"].num_nodes, self.phi[-1].out_features
        if turn.num_nodes == 0:
            return b.cand.new_zeros(n_c)
        resp = data["response"].x
        phi_t = self.features(data["query"].x, turn.query_idx, data["llm"].x, turn.llm_idx)  # [T, F]
        rated = resp[:, 1]
        n_grp = int(turn.group.max()) + 1
        cnt = scatter(rated, turn.group, 0, dim_size=n_grp, reduce="sum").clamp(min=1.0)
        mean = scatter(phi_t * rated[:, None], turn.group, 0, dim_size=n_grp, reduce="sum") / cnt[:, None]
        x = phi_t - mean[turn.group]  # [T, F] centered within the comparison
        wt = resp[:, 3] * torch.exp(-turn.x[:, 1] / self.log_tau.exp())  # only turns with a rated sibling
        a = scatter(wt[:, None, None] * x[:, :, None] * x[:, None, :], turn.user_idx, 0, dim_size=n_user,
                    reduce="sum")  # [U, F, F]
        a = a + self.log_lam.exp() * torch.eye(f)
        rhs = scatter((wt * resp[:, 0])[:, None] * x, turn.user_idx, 0, dim_size=n_user, reduce="sum")  # [U, F]
        w = torch.linalg.solve(a, rhs)  # [U, F]
        phi_c = self.features(b.query, b.cand_req, b.cand_unique, b.cand_inv)  # [N_c, F]
        return self.scale * (phi_c * w[b.req_user][b.cand_req]).sum(-1)  # [N_c]


class GraphEncoder(nn.Module):
    """HGT over the batched graph; returns the user states [U, H]."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.cfg = cfg
        self.turn = TurnEncoder(cfg)
        self.proj = nn.ModuleDict({"query": nn.Linear(cfg.emb_dim, h), "llm": nn.Linear(cfg.emb_dim, h),
                                   "response": nn.Linear(RESPONSE_FEATURES, h)})
        meta = metadata(cfg.reverse_edges)
        self.convs = nn.ModuleList(HGTConv(h, h, meta, heads=cfg.heads) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.ModuleDict({t: nn.LayerNorm(h) for t in ("turn", "user")})
                                   for _ in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, b: GraphBatch) -> Tensor:
        data = b.data
        n_user = data["user"].num_nodes
        h = self.cfg.hidden
        turn = data["turn"]
        if turn.num_nodes == 0:  # nobody has history: every user is a cold start
            return data["user"].x.new_zeros(n_user, h)
        xq, xm = data["query"].x, data["llm"].x
        x = {
            "query": self.proj["query"](xq),
            "llm": self.proj["llm"](xm),
            "response": self.proj["response"](data["response"].x),
            "turn": self.turn(xq, turn.query_idx, xm, turn.llm_idx, data["response"].x, turn.x),
            "user": xq.new_zeros(n_user, h),  # users start at zero: no per-user parameters
        }
        edges = {et: data[et].edge_index for et in data.edge_types}
        for i, (conv, norms) in enumerate(zip(self.convs, self.norms)):
            # = conv(x, edges) with far fewer ops (trainer/hgt_fast.py); the last layer's turn states are unused
            out = hgt_forward(conv, x, edges, out_types=("user",) if i == len(self.convs) - 1 else None)
            for t, norm in norms.items():
                if out.get(t) is not None:
                    x[t] = self.drop(norm(out[t]))
        return x["user"]


class CrossAttentionHead(nn.Module):
    """The candidate LLM attends over [user, query]; MLP on [attended, LLM, query ⊙ LLM, memory]."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.q = nn.Linear(cfg.emb_dim, h)
        self.m = nn.Linear(cfg.emb_dim, h)
        self.u = nn.Linear(h, h)
        self.attn = nn.MultiheadAttention(h, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.mem = nn.Linear(MEMORY_FEATURES, h)
        self.out = nn.Sequential(nn.Linear(4 * h, h), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(h, 1))

    def forward(self, h_user: Tensor, b: GraphBatch, mem: Tensor) -> Tensor:
        # h_user: [N_c, H]; mem: [N_c, MEMORY_FEATURES] -> [N_c]; projections run once per distinct row
        qh, mh = self.q(b.query)[b.cand_req], self.m(b.cand_unique)[b.cand_inv]
        ctx = torch.stack([self.u(h_user), qh], dim=1)  # [N_c, 2, H]
        att, _ = self.attn(mh[:, None], ctx, ctx, need_weights=False)  # [N_c, 1, H]
        return self.out(torch.cat([att[:, 0], mh, qh * mh, self.mem(mem)], dim=-1)).squeeze(-1)


class DotHead(nn.Module):
    """Ablation: score = <f(user, query), g(LLM)> (+ a linear read of the memory features)."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.ctx = nn.Sequential(nn.Linear(h + cfg.emb_dim, h), nn.ReLU(), nn.Linear(h, h))
        self.m = nn.Linear(cfg.emb_dim, h)
        self.mem = nn.Linear(MEMORY_FEATURES, 1)

    def forward(self, h_user: Tensor, b: GraphBatch, mem: Tensor) -> Tensor:
        ctx = self.ctx(torch.cat([h_user, b.query[b.cand_req]], -1))  # [N_c, H]
        return (ctx * self.m(b.cand_unique)[b.cand_inv]).sum(-1) + self.mem(mem).squeeze(-1)


class GMTRouter(nn.Module):
    def __init__(self, cfg: GMTRouterConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GMTRouterConfig()
        self.encoder = GraphEncoder(cfg) if cfg.use_user else None
        self.memory = PersonalMemory() if cfg.use_user and cfg.memory else None
        self.ridge = PersonalRidge(cfg) if cfg.use_user and cfg.ridge_dim > 0 else None
        self.head = CrossAttentionHead(cfg) if cfg.head == "cross" else DotHead(cfg)

    def forward(self, b: GraphBatch) -> Tensor:
        """Scores [N_c] for every candidate of every request (higher = better)."""
        n_c = b.cand.size(0)
        if self.encoder is not None:
            h_user = self.encoder(b)[b.req_user][b.cand_req]  # [N_c, H]
        else:
            h_user = b.cand.new_zeros(n_c, self.cfg.hidden)
        mem = self.memory(b) if self.memory is not None else b.cand.new_zeros(n_c, MEMORY_FEATURES)
        s = self.head(h_user, b, mem)
        return s + self.ridge(b) if self.ridge is not None else s

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
