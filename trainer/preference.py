"""Per-user preferences as a Bradley-Terry posterior, computed inside the forward pass.

Each user's weights w_u [F] over a learned feature map phi(query, LLM) [F] are the MAP estimate of a
Bayesian Bradley-Terry model fitted to that user's visible comparisons (prior N(0, diag(prec)^-1),
the global score as offset, soft labels from the rating difference, older comparisons down-weighted).
No per-user parameters are trained: phi, the prior and the label/recency maps are shared, and w_u is
solved anew for every request from the user's edges (Newton's method, one batched F x F solve per
user and iteration). Gradients reach the shared parameters through the implicit function theorem:
the fixed point is found without gradients, then one Newton step from it is differentiated.

Why this shape (issue 20): w_u is the exact minimiser of a convex objective in which a comparison
"A beat B" on query q only adds a term that decreases in phi(q, A) - phi(q, B) . w, so adding it (or
raising A's rating) can never lower score(A) - score(B) for q. Training cannot invert a preference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

NEWTON_MAX_ITERS = 25
NEWTON_TOL = 1e-6


def newton_step(w: Tensor, x: Tensor, off: Tensor, y: Tensor, om: Tensor, prec: Tensor, user: Tensor) -> Tensor:
    """One Newton step of every user's MAP problem at once.

    w [U, F] current weights; per pair p: x [P, F] feature difference, off [P] offset difference, y [P] soft
    label, om [P] weight, user [P]; prec [F] or [U, F] prior precision. Objective of user u:
    sum_p om_p * BCE(sigmoid(off_p + x_p . w_u), y_p) + 1/2 sum_f prec_uf w_uf^2.
    """
    n_user, f = w.shape
    p = torch.sigmoid(off + (x * w[user]).sum(-1))  # [P]
    grad = scatter((om * (p - y))[:, None] * x, user, 0, dim_size=n_user, reduce="sum") + prec * w  # [U, F]
    hess = scatter((om * p * (1 - p))[:, None, None] * x[:, :, None] * x[:, None, :], user, 0, dim_size=n_user,
                   reduce="sum") + torch.diag_embed(prec.expand(n_user, f))  # [U, F, F]
    return w - torch.linalg.solve(hess, grad)


class BayesPreference(nn.Module):
    """The per-user Bradley-Terry posterior mean w_u [F] over given features; shared hyper-parameters only."""

    def __init__(self, features: int):
        super().__init__()
        self.log_prec = nn.Parameter(torch.zeros(features))  # prior precision of each feature weight
        self.log_beta = nn.Parameter(torch.tensor(2.0))  # rating difference -> soft label sigmoid(beta * diff)
        self.log_tau = nn.Parameter(torch.tensor(0.0))  # recency decay, in units of 100 turns

    def _pair_data(self, phi_t: Tensor, offset_t: Tensor, rating: Tensor, age: Tensor, pairs: Tensor):
        i, j = pairs[0], pairs[1]
        x = phi_t[i] - phi_t[j]  # [P, F]
        off = offset_t[i] - offset_t[j]  # [P]
        y = torch.sigmoid(self.log_beta.exp() * (rating[i] - rating[j]))  # [P] soft label, rises with r_i - r_j
        om = torch.exp(-torch.maximum(age[i], age[j]) / (100.0 * self.log_tau.exp()))  # [P] rating-blind
        return i, j, x, off, y, om

    def precision(self, scale: Tensor | None, n_user: int) -> Tensor:
        """[U, F] each user's prior precision: the shared one times the user's (rating-blind) ``scale`` [U]."""
        prec = self.log_prec.exp().expand(n_user, -1)
        return prec if scale is None else prec * scale[:, None]

    def posterior(self, phi_t: Tensor, offset_t: Tensor, rating: Tensor, age: Tensor, user: Tensor,
                  pairs: Tensor, n_user: int, scale: Tensor | None = None) -> Tensor:
        """MAP weights [U, F] from the rated pairs of the visible turns.

        phi_t [T, F] features of each turn's (query, LLM); offset_t [T] global score of each turn's answer;
        rating [T] in [0, 1]; age [T] in turns from the user's newest (rated or not, so a rating arriving
        changes nothing else); user [T]; pairs [2, P] turns (i, j) of one comparison, both rated; ``scale`` [U]
        each user's prior strength (see :meth:`precision`)."""
        prec = self.precision(scale, n_user)
        w = phi_t.new_zeros(n_user, phi_t.size(1))
        if pairs.size(1) == 0:
            return w
        i, _, x, off, y, om = self._pair_data(phi_t, offset_t, rating, age, pairs)
        u = user[i]
        with torch.no_grad():  # the fixed point: the objective is strictly convex, Newton converges
            args = (x.detach(), off.detach(), y.detach(), om.detach(), prec.detach(), u)
            for _ in range(NEWTON_MAX_ITERS):
                new = newton_step(w, *args)
                done = float((new - w).abs().max()) < NEWTON_TOL
                w = new
                if done:
                    break
        if not torch.is_grad_enabled():
            return w
        # one differentiated Newton step from the fixed point = the implicit-function-theorem gradient
        return newton_step(w.detach(), x, off, y, om, prec, u)

    def pair_terms(self, phi_t: Tensor, offset_t: Tensor, rating: Tensor, age: Tensor, pairs: Tensor,
                   w_pair: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(i [P], j [P], coef [P], x [P, F]) with w_u = sum over u's pairs of coef_p * x_p / prec at the MAP
        (``w_pair`` [P, F]: the pair's user's MAP weights): each comparison's exact share of the posterior."""
        i, j, x, off, y, om = self._pair_data(phi_t, offset_t, rating, age, pairs)
        coef = om * (y - torch.sigmoid(off + (x * w_pair).sum(-1)))
        return i, j, coef, x
