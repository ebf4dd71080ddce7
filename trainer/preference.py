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
(If w minimises f and w' minimises f + g(x . w) with g decreasing, then f(w') + g(x . w') <= f(w) + g(x . w)
and f(w) <= f(w'), so g(x . w') <= g(x . w): x . w' >= x . w. It holds for any prior penalty f whose minimiser
is found, which strict convexity guarantees.)

The prior is Gaussian, or with ``robust`` a pseudo-Huber penalty in prior units z = sqrt(prec) * w:
kappa^2 (sqrt(1 + z^2 / kappa^2) - 1), quadratic (the Gaussian's z^2 / 2) for |z| << kappa and linear beyond.
It is still strictly convex, so the guarantee stands, but a user whose comparisons consistently point far
from the crowd is shrunk by a constant amount rather than a constant share (heavy, Laplace-like tails: a
population that mixes mild and strong tastes). kappa is learned (shared).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

NEWTON_MAX_ITERS = 25
NEWTON_TOL = 1e-6
BACKTRACK_HALVINGS = 8


def robust_stretch(w: Tensor, prec: Tensor, kappa: Tensor) -> Tensor:
    """[U, F] s = sqrt(1 + prec w^2 / kappa^2): the robust penalty is kappa^2 (s - 1), its gradient prec w / s."""
    return torch.sqrt(1.0 + prec * w * w / kappa**2)


def prior_terms(w: Tensor, prec: Tensor, kappa: Tensor | None) -> tuple[Tensor, Tensor]:
    """(gradient [U, F], curvature [U, F]) of the prior penalty at w [U, F]; prec [F] or [U, F].

    Gaussian (``kappa`` None): 1/2 prec w^2. Robust: kappa^2 (sqrt(1 + prec w^2 / kappa^2) - 1), whose gradient
    is prec w / s and curvature prec / s^3 with s = :func:`robust_stretch`."""
    if kappa is None:
        return prec * w, prec.expand_as(w)
    s = robust_stretch(w, prec, kappa)
    return prec * w / s, prec / s**3


def newton_step(w: Tensor, x: Tensor, off: Tensor, y: Tensor, om: Tensor, prec: Tensor, user: Tensor,
                kappa: Tensor | None = None) -> Tensor:
    """One Newton step of every user's MAP problem at once.

    w [U, F] current weights; per pair p: x [P, F] feature difference, off [P] offset difference, y [P] soft
    label, om [P] weight, user [P]; prec [F] or [U, F] prior precision. Objective of user u:
    sum_p om_p * BCE(sigmoid(off_p + x_p . w_u), y_p) + the prior penalty of w_u (:func:`prior_terms`).
    """
    n_user = w.size(0)
    p = torch.sigmoid(off + (x * w[user]).sum(-1))  # [P]
    g_prior, h_prior = prior_terms(w, prec, kappa)  # [U, F], [U, F]
    grad = scatter((om * (p - y))[:, None] * x, user, 0, dim_size=n_user, reduce="sum") + g_prior  # [U, F]
    hess = scatter((om * p * (1 - p))[:, None, None] * x[:, :, None] * x[:, None, :], user, 0, dim_size=n_user,
                   reduce="sum") + torch.diag_embed(h_prior)  # [U, F, F]
    return w - torch.linalg.solve(hess, grad)


def objective(w: Tensor, x: Tensor, off: Tensor, y: Tensor, om: Tensor, prec: Tensor, user: Tensor,
              kappa: Tensor | None) -> Tensor:
    """[U] each user's MAP objective at w [U, F] (the arguments of :func:`newton_step`)."""
    z = off + (x * w[user]).sum(-1)  # [P]
    fit = scatter(om * (F.softplus(z) - y * z), user, 0, dim_size=w.size(0), reduce="sum")  # BCE with logits
    if kappa is None:
        return fit + 0.5 * (prec * w * w).sum(-1)
    return fit + (kappa**2 * (robust_stretch(w, prec, kappa) - 1.0)).sum(-1)


def backtrack(w: Tensor, new: Tensor, *args) -> Tensor:
    """``new`` [U, F], with each user's step from ``w`` halved until their objective does not rise (a damped
    Newton step: it converges from any start, where a full step can overshoot)."""
    f0 = objective(w, *args)
    for _ in range(BACKTRACK_HALVINGS):
        worse = ~(objective(new, *args) <= f0 + 1e-6 * f0.abs())  # NaN counts as worse
        if not bool(worse.any()):
            break
        new = torch.where(worse[:, None], (w + new) / 2, new)
    return new


class BayesPreference(nn.Module):
    """The per-user Bradley-Terry posterior mean w_u [F] over given features; shared hyper-parameters only."""

    def __init__(self, features: int, robust: bool = False, two_scale: bool = False):
        super().__init__()
        self.log_prec = nn.Parameter(torch.zeros(features))  # prior precision of each feature weight
        # robust prior: where the penalty turns linear, in prior standard deviations (see prior_terms)
        self.log_kappa = nn.Parameter(torch.tensor(1.0)) if robust else None
        self.log_beta = nn.Parameter(torch.tensor(2.0))  # rating difference -> soft label sigmoid(beta * diff)
        self.log_tau = nn.Parameter(torch.tensor(0.0))  # recency decay, in units of 100 turns
        # two_scale: a second, long decay (10 x 100 turns at init) and the share of the short one (1/2 at init)
        self.log_tau_long = nn.Parameter(torch.tensor(math.log(10.0))) if two_scale else None
        self.short_logit = nn.Parameter(torch.tensor(0.0)) if two_scale else None

    def _pair_data(self, phi_t: Tensor, offset_t: Tensor, rating: Tensor, age: Tensor, pairs: Tensor):
        i, j = pairs[0], pairs[1]
        x = phi_t[i] - phi_t[j]  # [P, F]
        off = offset_t[i] - offset_t[j]  # [P]
        y = torch.sigmoid(self.log_beta.exp() * (rating[i] - rating[j]))  # [P] soft label, rises with r_i - r_j
        om = self.recency(torch.maximum(age[i], age[j]))  # [P] rating-blind
        return i, j, x, off, y, om

    def recency(self, age: Tensor) -> Tensor:
        """[P] the weight of a comparison ``age`` [P] turns old: exp(-age / tau), or with two scales
        a exp(-age / tau) + (1 - a) exp(-age / tau_long); positive and blind to the ratings either way."""
        short = torch.exp(-age / (100.0 * self.log_tau.exp()))
        if self.log_tau_long is None:
            return short
        a = torch.sigmoid(self.short_logit)
        return a * short + (1.0 - a) * torch.exp(-age / (100.0 * self.log_tau_long.exp()))

    def precision(self, scale: Tensor | None, n_user: int) -> Tensor:
        """[U, F] each user's prior precision: the shared one times the user's (rating-blind) ``scale``, [U, 1]
        (one strength for all features) or [U, F] (one per feature)."""
        prec = self.log_prec.exp().expand(n_user, -1)
        return prec if scale is None else prec * scale

    def posterior(self, phi_t: Tensor, offset_t: Tensor, rating: Tensor, age: Tensor, user: Tensor,
                  pairs: Tensor, n_user: int, scale: Tensor | None = None) -> Tensor:
        """MAP weights [U, F] from the rated pairs of the visible turns.

        phi_t [T, F] features of each turn's (query, LLM); offset_t [T] global score of each turn's answer;
        rating [T] in [0, 1]; age [T] in turns from the user's newest (rated or not, so a rating arriving
        changes nothing else); user [T]; pairs [2, P] turns (i, j) of one comparison, both rated; ``scale``
        [U, 1] or [U, F] each user's prior strength (see :meth:`precision`)."""
        prec = self.precision(scale, n_user)
        w = phi_t.new_zeros(n_user, phi_t.size(1))
        if pairs.size(1) == 0:
            return w
        i, _, x, off, y, om = self._pair_data(phi_t, offset_t, rating, age, pairs)
        u = user[i]
        kappa = self.kappa()
        with torch.no_grad():  # the fixed point: the objective is strictly convex, Newton converges
            args = (x.detach(), off.detach(), y.detach(), om.detach(), prec.detach(), u,
                    None if kappa is None else kappa.detach())
            for _ in range(NEWTON_MAX_ITERS):
                new = newton_step(w, *args)
                if kappa is not None:  # the robust penalty's flat tails can make a full step overshoot
                    new = backtrack(w, new, *args)
                done = float((new - w).abs().max()) < NEWTON_TOL
                w = new
                if done:
                    break
        if not torch.is_grad_enabled():
            return w
        # one differentiated Newton step from the fixed point = the implicit-function-theorem gradient
        return newton_step(w.detach(), x, off, y, om, prec, u, kappa)

    def kappa(self) -> Tensor | None:
        return None if self.log_kappa is None else self.log_kappa.exp()

    def effective_precision(self, w: Tensor, prec: Tensor) -> Tensor:
        """[U, F] the precision P with prior gradient P * w at ``w`` [U, F] (``prec`` itself for the Gaussian
        prior), so that at the MAP P * w_u = the sum of the user's pair terms (:meth:`pair_terms`)."""
        kappa = self.kappa()
        return prec.expand_as(w) if kappa is None else prec / robust_stretch(w, prec, kappa)

    def pair_terms(self, phi_t: Tensor, offset_t: Tensor, rating: Tensor, age: Tensor, pairs: Tensor,
                   w_pair: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(i [P], j [P], coef [P], x [P, F]) with w_u = sum over u's pairs of coef_p * x_p / P at the MAP
        (P: :meth:`effective_precision`; ``w_pair`` [P, F]: the pair's user's MAP weights): each comparison's
        exact share of the posterior."""
        i, j, x, off, y, om = self._pair_data(phi_t, offset_t, rating, age, pairs)
        coef = om * (y - torch.sigmoid(off + (x * w_pair).sum(-1)))
        return i, j, coef, x
