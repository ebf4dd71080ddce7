"""The GMTRouter scorer: a graph encoder for context, a global head, and the user's own evidence added
through paths whose sign is fixed.

    request (user u, query q, candidate LLM m):

    score(u, q, m) = g(q, m | h_u)                       global head: m attends over [h_u, topics(q)]
                   + <phi(q, m | h_u), w_u>              Bayesian Bradley-Terry posterior of u's comparisons
                   + a_mem(u)  * memory_u(q, m)          u's past ratings of m on queries like q
                   + a_count(u) * counts_u(m)            the same over all of u's past queries
                   + a_conv(u) * conversation_u(m)       m's rating on the previous turn of this conversation
                   + a_crowd(u) * crowd(q, m | not u)    other users' centred ratings of m on this same query text
                   + a_level(u) * levels_u(m)            u's recent ratings of m at their level (cfg.levels)

    h_u = HGT(user's turns, their queries, LLMs and conversation chain; NOT their rating values)
    a_*(u) = softplus(shared + linear(h_u, log(1 + turns of u)))   how much this kind of user's evidence counts
    w_u's prior precision = shared * exp(linear(h_u, log(1 + turns of u)))   how far this kind of user's taste
                                                                           may stray from the crowd's

The user's ratings reach the score only through the posterior, memory and conversation terms (the crowd term
leaves the user out): w_u is the exact MAP of a convex problem (trainer/preference.py), and a_mem, a_count,
a_conv >= 0 multiply averages of centered ratings of the same LLM; the a_* and the prior depend on the user
only through rating-blind inputs, so a rating cannot move them. So a comparison "A beat B" (or a higher rating of A) can
never lower score(A) - score(B) for that query (tests/trainer/test_monotone.py checks it on random users),
whatever the training did. The HGT shapes the
context (which topics the user asks about, the LLMs they meet, the conversation structure) that the global
head and the feature map phi read. No per-user parameters: a user is only the edges of its turns, so new
users and new LLMs (described by their description embedding) are scored without retraining.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import HGTConv
from torch_geometric.utils import scatter

from trainer.config import GMTRouterConfig
from trainer.graph import RESPONSE_FEATURES, TURN_FEATURES, GraphBatch, metadata
from trainer.hgt_fast import hgt_forward
from trainer.preference import BayesPreference



class Topics(nn.Module):
    """Query embedding [*, D] -> soft topic memberships [*, K] (rows sum to 1)."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        self.lin = nn.Linear(cfg.emb_dim, cfg.topics)

    def forward(self, q: Tensor) -> Tensor:
        return torch.softmax(self.lin(q), dim=-1)


class GraphEncoder(nn.Module):
    """HGT over the batched graph, blind to feedback (not even whether a turn is rated: a rating arriving
    must change nothing but the evidence terms); returns the user states [U, H]."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.cfg = cfg
        self.q = nn.Linear(cfg.topics, h)
        self.m = nn.Linear(cfg.llm_dim, h)
        self.resp = nn.Parameter(torch.zeros(h))  # response nodes: the encoder must not know if one is rated
        # the diagnostic variant that lets ratings into the graph (cfg.hgt_ratings): no sign guarantee
        self.rated = nn.Linear(RESPONSE_FEATURES, h) if cfg.hgt_ratings else None
        self.turn = nn.Sequential(nn.Linear(3 * h + TURN_FEATURES, h), nn.GELU(), nn.Linear(h, h))
        meta = metadata(cfg.reverse_edges)
        self.convs = nn.ModuleList(HGTConv(h, h, meta, heads=cfg.heads) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.ModuleDict({t: nn.LayerNorm(h) for t in ("turn", "user")})
                                   for _ in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, b: GraphBatch, topics_q: Tensor) -> Tensor:
        # topics_q: [NQ, K] topics of the graph's query nodes
        data = b.data
        n_user, h = data["user"].num_nodes, self.cfg.hidden
        turn = data["turn"]
        if turn.num_nodes == 0:  # nobody has history: every user is a cold start
            return topics_q.new_zeros(n_user, h)
        q, m = self.q(topics_q), self.m(data["llm"].x)  # [NQ, H], [NM, H]
        resp = self.resp.expand(turn.num_nodes, h)  # [T, H]
        if self.rated is not None:
            resp = resp + self.rated(data["response"].x)
        qt, mt = q[turn.query_idx], m[turn.llm_idx]
        x = {"query": q, "llm": m, "response": resp,
             "turn": self.turn(torch.cat([qt, mt, qt * mt, turn.x], dim=-1)),
             "user": q.new_zeros(n_user, h)}  # users start at zero: no per-user parameters
        edges = {et: data[et].edge_index for et in data.edge_types}
        for i, (conv, norms) in enumerate(zip(self.convs, self.norms)):
            # = conv(x, edges) with far fewer ops (trainer/hgt_fast.py); the last layer's turn states are unused
            out = hgt_forward(conv, x, edges, out_types=("user",) if i == len(self.convs) - 1 else None)
            for t, norm in norms.items():
                if out.get(t) is not None:
                    x[t] = self.drop(norm(out[t]))
        return x["user"]


class CrossAttentionHead(nn.Module):
    """g(q, m | h_u): the candidate LLM attends over [user, query]; MLP on [attended, LLM, query * LLM]."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.q = nn.Linear(cfg.topics, h)
        self.m = nn.Linear(cfg.llm_dim, h)
        self.u = nn.Linear(h, h)
        self.attn = nn.MultiheadAttention(h, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.out = nn.Sequential(nn.Linear(3 * h, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, 1))

    def forward(self, h_user: Tensor, topics: Tensor, q_idx: Tensor, llm: Tensor, m_idx: Tensor) -> Tensor:
        # h_user [N, H], topics [NQ, K] gathered by q_idx [N], llm [NM, D] gathered by m_idx [N] -> [N]
        qh, mh = self.q(topics)[q_idx], self.m(llm)[m_idx]
        ctx = torch.stack([self.u(h_user), qh], dim=1)  # [N, 2, H]
        att, _ = self.attn(mh[:, None], ctx, ctx, need_weights=False)  # [N, 1, H]
        return self.out(torch.cat([att[:, 0], mh, qh * mh], dim=-1)).squeeze(-1)


class DotHead(nn.Module):
    """Ablation: g = <f(user, query), g(LLM)>."""

    def __init__(self, cfg: GMTRouterConfig):
        super().__init__()
        h = cfg.hidden
        self.ctx = nn.Sequential(nn.Linear(h + cfg.topics, h), nn.GELU(), nn.Linear(h, h))
        self.m = nn.Linear(cfg.llm_dim, h)

    def forward(self, h_user: Tensor, topics: Tensor, q_idx: Tensor, llm: Tensor, m_idx: Tensor) -> Tensor:
        return (self.ctx(torch.cat([h_user, topics[q_idx]], -1)) * self.m(llm)[m_idx]).sum(-1)


def shrunk_shares(b: GraphBatch, w: Tensor, r: Tensor, prior: Tensor) -> Tensor:
    """[P] each (candidate, turn) pair's share w r / (sum of its candidate's w + prior) of its candidate's
    weighted average of the ratings r [P], shrunk towards 0; w [P] > 0 the pairs' weights."""
    den = scatter(w, b.mem_cand, 0, dim_size=b.cand.size(0), reduce="sum") + prior  # [N_c]
    return w * r / den[b.mem_cand]


def per_candidate(b: GraphBatch, shares: Callable[[], Tensor]) -> Tensor:
    """[N_c] the sum of each candidate's pair ``shares()`` [P] (zeros without pairs, ``shares`` not called)."""
    n_c = b.cand.size(0)
    if b.mem_cand.numel() == 0:
        return b.cand.new_zeros(n_c)
    return scatter(shares(), b.mem_cand, 0, dim_size=n_c, reduce="sum")


class PersonalMemory(nn.Module):
    """memory_u(q, m): u's centered ratings of m, weighted by how similar the past query was to q and
    shrunk towards 0; it only rises when m is rated higher (|centered rating| <= 1/2 keeps the average
    of a winner's ratings from falling)."""

    def __init__(self, tau: float = 5.0, prior: float = 1.0, sharpen: bool = False):
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(float(tau)).log())
        self.log_prior = nn.Parameter(torch.tensor(float(prior)).log())
        # with ``sharpen``, a second similarity (the topic memberships) multiplies the first: tau_topic = 1 at init
        self.log_tau_topic = nn.Parameter(torch.tensor(0.0)) if sharpen else None

    def terms(self, b: GraphBatch, space: tuple[Tensor, Tensor] | None = None,
              sharpen: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """[P] each (candidate, turn) pair's share of its candidate's memory (they sum to it). ``space``: what
        the query similarity compares, (requests [B, *], graph queries [NQ, *]); the text embeddings if None.
        ``sharpen``: a second pair of the same shape (the topic memberships) whose similarity multiplies the
        weights, exp(tau (cos - 1) + tau_topic (cos_topic - 1)); only with ``sharpen=True`` at construction."""
        q_req, q_graph = (b.query, b.data["query"].x) if space is None else space
        logw = self.log_tau.exp() * (self._cos(b, q_req, q_graph) - 1.0)  # [P] <= 0
        if sharpen is not None:
            logw = logw + self.log_tau_topic.exp() * (self._cos(b, *sharpen) - 1.0)
        w = torch.exp(logw)  # [P] in (0, 1]: blind to the ratings
        r = b.data["response"].x[b.mem_turn, 0]  # [P] centered rating within its comparison
        return shrunk_shares(b, w, r, self.log_prior.exp())

    def forward(self, b: GraphBatch, space: tuple[Tensor, Tensor] | None = None,
                sharpen: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return per_candidate(b, lambda: self.terms(b, space, sharpen))  # [N_c]

    @staticmethod
    def _cos(b: GraphBatch, q_req: Tensor, q_graph: Tensor) -> Tensor:
        """[P] cosine between each (candidate, turn) pair's request ([B, *]) and past query ([NQ, *])."""
        sim = F.normalize(q_req, dim=-1) @ F.normalize(q_graph, dim=-1).T  # [B, NQ]
        return sim[b.cand_req[b.mem_cand], b.data["turn"].query_idx[b.mem_turn]]


class LevelMemory(nn.Module):
    """levels_u(m): u's ratings of m at their own level minus a shared constant c = sigmoid(center) (1/2 at init),
    weighted by recency exp(-age / (100 tau)) and shrunk towards 0. A thumbs-up or a score says how good the answer
    was, not only whether it beat its sibling. c, tau and the prior are shared and the weights blind to the ratings,
    so a higher rating of m raises levels_u(m) and moves no other LLM's (r - c in [-c, 1 - c]). With ``llm_dim``,
    c is m's own, sigmoid(center + a linear map of m's input vector) (zero at init: the shared c), which is still
    blind to the ratings and one value for all of m's ratings, so the same holds.

    With ``leniency``, each rating is also read against the user's own level: r - c - lam * l_u, where l_u is the
    user's recency-weighted mean of r - c over all their rated answers, shrunk towards 0 (prior p_l), and lam =
    sigmoid(.) in (0, 1): a lenient user's thumbs-ups say less. A rise of one of m's ratings (weight s) still raises
    levels_u(m), by s / (S_m + p) * (1 - lam S_m / (S_u + p_l)) > 0 (S_m, the weights of m's ratings, is part of
    S_u, all the user's), and lowers every other LLM's term, so the guarantee holds."""

    def __init__(self, tau: float = 1.0, prior: float = 2.0, llm_dim: int | None = None, leniency: bool = False):
        super().__init__()
        self.center = nn.Parameter(torch.tensor(0.0))
        self.center_llm = nn.Linear(llm_dim, 1) if llm_dim else None
        if self.center_llm is not None:
            nn.init.zeros_(self.center_llm.weight)
            nn.init.zeros_(self.center_llm.bias)
        self.log_tau = nn.Parameter(torch.tensor(float(tau)).log())  # in units of 100 turns, as the posterior's
        self.log_prior = nn.Parameter(torch.tensor(float(prior)).log())
        # the share lam = sigmoid(leniency_logit) of the user's own level taken off each rating (1/2 at init) and the
        # prior strength p_l = exp(log_leniency_prior) that shrinks that level towards 0 (1 at init)
        self.leniency_logit = nn.Parameter(torch.tensor(0.0)) if leniency else None
        self.log_leniency_prior = nn.Parameter(torch.tensor(0.0)) if leniency else None

    def terms(self, b: GraphBatch) -> Tensor:
        """[P] each (candidate, turn) pair's share of its candidate's levels term (they sum to it)."""
        turn = b.data["turn"]
        # the pairs' turns [P]; with the leniency every turn [T], as each user's level reads all their rated turns
        at = b.mem_turn if self.leniency_logit is None else slice(None)
        w = torch.exp(-turn.x[at, 1] / self.log_tau.exp())  # age in 100 turns from the user's newest: in (0, 1]
        c = self.center
        if self.center_llm is not None:  # each turn's LLM's own constant
            c = c + self.center_llm(b.data["llm"].x)[turn.llm_idx[at], 0]
        r = b.data["response"].x[at, 2] - torch.sigmoid(c)  # the level minus c (unrated turns: never read)
        if self.leniency_logit is not None:
            r = r - self.user_level(b, w, r)[turn.user_idx]
            w, r = w[b.mem_turn], r[b.mem_turn]
        return shrunk_shares(b, w, r, self.log_prior.exp())  # [P] each

    def user_level(self, b: GraphBatch, w: Tensor, r: Tensor) -> Tensor:
        """[U] lam * l_u: the share lam of each user's recency-weighted mean of r [T] over their rated turns (weights
        w [T], the term's own), shrunk towards 0 by the prior p_l."""
        turn, n_user = b.data["turn"], b.data["user"].num_nodes
        v = w * b.data["response"].x[:, 1]  # [T] the rated turns' weights (x[:, 1]: rated or not)
        num = scatter(v * r, turn.user_idx, 0, dim_size=n_user, reduce="sum")
        den = scatter(v, turn.user_idx, 0, dim_size=n_user, reduce="sum") + self.log_leniency_prior.exp()
        return torch.sigmoid(self.leniency_logit) * num / den

    def forward(self, b: GraphBatch) -> Tensor:
        return per_candidate(b, lambda: self.terms(b))  # [N_c]


class GMTRouter(nn.Module):
    def __init__(self, cfg: GMTRouterConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GMTRouterConfig()
        h = cfg.hidden
        self.topics = Topics(cfg)
        self.encoder = GraphEncoder(cfg) if cfg.use_hgt else None
        self.head = CrossAttentionHead(cfg) if cfg.head == "cross" else DotHead(cfg)
        if cfg.personal:
            # phi = [g, LLM code, a small map of (topics, LLM, user state)]
            self.code = nn.Linear(cfg.llm_dim, cfg.pref_dim // 2)
            n_mlp = cfg.pref_dim - 1 - cfg.pref_dim // 2
            self.phi = nn.Sequential(nn.Linear(cfg.topics + cfg.llm_dim + h, h), nn.GELU(), nn.Linear(h, n_mlp))
            self.pref = BayesPreference(cfg.pref_dim, robust=cfg.robust_prior, two_scale=cfg.two_scale_recency)
        self.memory = PersonalMemory(sharpen=cfg.memory_space == "both") if cfg.memory else None
        self.mem_weight = nn.Parameter(torch.tensor(0.0)) if cfg.memory else None
        self.counts = PersonalMemory(tau=1e-3, prior=2.0) if cfg.counts else None
        if self.counts is not None:
            self.counts.log_tau.requires_grad_(False)  # every past query counts alike
        self.count_weight = nn.Parameter(torch.tensor(0.0)) if cfg.counts else None
        self.conv_weight = nn.Parameter(torch.tensor(0.0)) if cfg.conversation else None
        self.levels = LevelMemory(llm_dim=cfg.llm_dim if cfg.level_center_llm else None,
                                  leniency=cfg.level_leniency) if cfg.levels else None
        self.level_weight = nn.Parameter(torch.tensor(0.0)) if cfg.levels else None
        n_in = h + 1 + int(cfg.structure)  # user_inputs' width
        self.gate = nn.Linear(n_in, self.n_terms) if cfg.gates else None  # zero at init: the shared weights alone
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        self.crowd_weight = nn.Parameter(torch.tensor(0.0)) if cfg.crowd else None
        n_prior = cfg.pref_dim if cfg.prior_gate_features else 1  # one strength per feature, or one for all
        self.prior_gate = nn.Linear(n_in, n_prior) if cfg.prior_gate and cfg.personal else None  # zero: shared
        if self.prior_gate is not None:
            nn.init.zeros_(self.prior_gate.weight)
            nn.init.zeros_(self.prior_gate.bias)

    def features(self, g: Tensor, h_user: Tensor, topics: Tensor, q_idx: Tensor, llm: Tensor, m_idx: Tensor) -> Tensor:
        """phi(q, m | h_u) [N, pref_dim] for N (query, LLM) rows."""
        mlp = self.phi(torch.cat([topics[q_idx], llm[m_idx], h_user], dim=-1))
        return torch.cat([g[:, None], self.code(llm)[m_idx], mlp], dim=-1)

    def forward(self, b: GraphBatch, keep: dict | None = None) -> Tensor:
        """Scores [N_c] for every candidate of every request (higher = better). ``keep``: a dict that receives
        the intermediate tensors (user states, topics, head outputs, features, posterior; "terms": {name: [N_c]}, the
        score's parts, which sum to it) so an explanation (trainer/explain.py) reuses them instead of running
        the model again."""
        data, turn = b.data, b.data["turn"]
        n_user = data["user"].num_nodes
        t_req, t_graph = self.topics(b.query), self.topics(data["query"].x)  # [B, K], [NQ, K]
        h = self.encoder(b, t_graph) if self.encoder is not None else b.cand.new_zeros(n_user, self.cfg.hidden)
        h_c = h[b.req_user][b.cand_req]  # [N_c, H]
        g_c = self.head(h_c, t_req, b.cand_req, b.cand_unique, b.cand_inv)  # [N_c]
        terms = {"head": g_c}  # [N_c] each: the score is their sum, added in this order
        u_in = self.user_inputs(b, h)  # [U, H + 1] rating-blind: read by the prior strength and the gates
        if keep is not None:
            keep.update(t_req=t_req, t_graph=t_graph, h=h, h_c=h_c, g_c=g_c, terms=terms)
        if self.cfg.personal and turn.num_nodes > 0:
            h_t = h[turn.user_idx]
            g_t = self.head(h_t, t_graph, turn.query_idx, data["llm"].x, turn.llm_idx)  # [T] offsets
            phi_t = self.features(g_t, h_t, t_graph, turn.query_idx, data["llm"].x, turn.llm_idx)  # [T, F]
            scale = torch.exp(self.prior_gate(u_in)) if self.prior_gate is not None else None  # [U, 1 or F]
            w = self.pref.posterior(phi_t, g_t, data["response"].x[:, 2], turn.x[:, 1] * 100.0, turn.user_idx,
                                    turn.pair_index, n_user, scale)  # [U, F]
            phi_c = self.features(g_c, h_c, t_req, b.cand_req, b.cand_unique, b.cand_inv)  # [N_c, F]
            terms["posterior"] = (phi_c * w[b.req_user][b.cand_req]).sum(-1)
            if keep is not None:
                keep.update(g_t=g_t, phi_t=phi_t, phi_c=phi_c, w=w, prec=self.pref.precision(scale, n_user))
        a = self.evidence_weights(self.gates(b, h, u_in))  # [N_c, n_terms] this user's weights (rating-blind)
        if keep is not None:
            keep["evidence_weights"] = a
        if self.memory is not None:
            terms["memory"] = a[:, 0] * self.memory(b, *self.memory_space(t_req, t_graph))
        if self.counts is not None:
            terms["counts"] = a[:, 1] * self.counts(b)
        if self.conv_weight is not None and b.conv_prev is not None:
            terms["conversation"] = a[:, 2] * b.conv_prev
        if self.crowd_weight is not None and b.crowd is not None:
            terms["crowd"] = a[:, 3] * b.crowd
        if self.levels is not None:
            terms["levels"] = a[:, 4] * self.levels(b)
        s = g_c
        for name in list(terms)[1:]:
            s = s + terms[name]
        return s

    @property
    def n_terms(self) -> int:
        """How many evidence weights the model has: memory, counts, conversation, crowd (and levels)."""
        return 5 if self.cfg.levels else 4

    def memory_space(self, t_req: Tensor, t_graph: Tensor) -> tuple[tuple[Tensor, Tensor] | None, ...]:
        """(space, sharpen) for :meth:`PersonalMemory.terms` (``cfg.memory_space``): "text" (None, None), the
        text embeddings; "topics" ((t_req, t_graph), None), the topic memberships of the requests [B, K] and of
        the graph's queries [NQ, K]; "both" (None, (t_req, t_graph)), the text similarity sharpened by the
        topics'."""
        topics = (t_req, t_graph)
        return {"text": (None, None), "topics": (topics, None), "both": (None, topics)}[self.cfg.memory_space]

    def evidence_weights(self, gate: Tensor) -> Tensor:
        """[N_c, n_terms] the memory, counts, conversation, crowd (and levels) weights 4 * softplus(shared + gate)
        of each candidate's user (0 for a term the model does not have); gate [N_c, n_terms] from :meth:`gates`."""
        shared = (self.mem_weight, self.count_weight, self.conv_weight, self.crowd_weight,
                  self.level_weight)[:self.n_terms]
        return torch.stack([F.softplus(w + gate[:, k]) * 4.0 if w is not None else torch.zeros_like(gate[:, k])
                            for k, w in enumerate(shared)], dim=-1)

    def gates(self, b: GraphBatch, h: Tensor, inputs: Tensor | None = None) -> Tensor:
        """[N_c, n_terms] shifts of the memory, counts, conversation, crowd (and levels) weights of each user,
        from the user's HGT state and number of visible turns (zeros without ``cfg.gates``). Both are blind to
        ratings, so each weight softplus(shared + shift) is >= 0 and a rating cannot move it: the sign
        guarantee of the evidence terms holds per user. ``inputs``: :meth:`user_inputs`, when already built."""
        n_c = b.cand.size(0)
        if self.gate is None:
            return b.cand.new_zeros(n_c, self.n_terms)
        g = self.gate(self.user_inputs(b, h) if inputs is None else inputs)  # [U, n_terms]
        return g[b.req_user][b.cand_req]

    def user_inputs(self, b: GraphBatch, h: Tensor) -> Tensor:
        """[U, H + 1 (+ 1)] what the per-user weights are read from, all blind to ratings: the HGT state,
        log(1 + visible turns) and, with ``cfg.structure``, the share of visible turns that follow a previous
        turn of their conversation (how much of this user's traffic is follow-ups)."""
        turn = b.data["turn"]
        n_user = h.size(0)
        ones = torch.ones_like(turn.user_idx, dtype=h.dtype)  # [T]
        n_t = scatter(ones, turn.user_idx, 0, dim_size=n_user, reduce="sum")  # [U] (zeros when T = 0)
        cols = [h, torch.log1p(n_t)[:, None] / 4.0]
        if self.cfg.structure:
            src = b.data["turn", "follows", "turn"].edge_index[0]  # [E] turns that have a previous turn
            n_f = scatter(ones[src], turn.user_idx[src], 0, dim_size=n_user, reduce="sum")  # [U]
            # scaled so that users whose shares differ by a quarter differ by 2 at the gate: a weight the
            # optimizer reaches within one run (Adam moves a weight by about lr per step)
            cols.append(8.0 * (n_f / n_t.clamp(min=1.0))[:, None] - 4.0)
        return torch.cat(cols, dim=-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
