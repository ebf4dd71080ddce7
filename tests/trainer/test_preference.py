"""The posterior's prior penalties (trainer/preference.py): the robust prior's gradient and curvature are its
penalty's, it is the Gaussian prior for large kappa, and it shrinks a strong, consistent taste less."""

from __future__ import annotations

import torch

from trainer.preference import BayesPreference, prior_terms


def _penalty(w: torch.Tensor, prec: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    return (kappa**2 * (torch.sqrt(1.0 + prec * w * w / kappa**2) - 1.0)).sum()


def test_robust_prior_terms_are_the_penalty_derivatives():
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.float64) * 3
    prec = torch.rand(4, dtype=torch.float64) + 0.1
    kappa = torch.tensor(0.7, dtype=torch.float64)
    grad, curv = prior_terms(w, prec, kappa)
    auto = torch.autograd.functional.jacobian(lambda v: _penalty(v, prec, kappa), w)
    torch.testing.assert_close(grad, auto)
    second = torch.stack([torch.autograd.functional.hessian(lambda v: _penalty(v, prec[f], kappa), w[u, f])
                          for u in range(3) for f in range(4)]).reshape(3, 4)
    torch.testing.assert_close(curv, second)
    g_gauss, c_gauss = prior_terms(w, prec, None)
    g_wide, c_wide = prior_terms(w, prec, torch.tensor(1e4, dtype=torch.float64))
    torch.testing.assert_close(g_wide, g_gauss, rtol=1e-6, atol=1e-9)  # kappa -> inf: the Gaussian prior
    torch.testing.assert_close(c_wide, c_gauss, rtol=1e-6, atol=1e-9)


def _fit(pref: BayesPreference, n: int) -> torch.Tensor:
    """One user, n comparisons that all say LLM feature 0 wins; returns the MAP weights [1, F]."""
    phi = torch.zeros(2 * n, 2)
    phi[0::2, 0] = 1.0  # the winner of each pair has feature 0, the loser feature 1
    phi[1::2, 1] = 1.0
    rating = torch.tensor([1.0, 0.0] * n)
    pairs = torch.stack([torch.arange(0, 2 * n, 2), torch.arange(1, 2 * n, 2)])
    with torch.no_grad():
        return pref.posterior(phi, torch.zeros(2 * n), rating, torch.zeros(2 * n), torch.zeros(2 * n, dtype=torch.long),
                              pairs, 1)


def test_robust_prior_shrinks_a_consistent_taste_less():
    gauss, robust = BayesPreference(2), BayesPreference(2, robust=True)
    with torch.no_grad():
        robust.log_kappa.fill_(-1.0)
    for n in (3, 30):
        wg, wr = _fit(gauss, n), _fit(robust, n)
        assert wr[0, 0] - wr[0, 1] > wg[0, 0] - wg[0, 1] > 0  # same evidence, a stronger preference
    wide = BayesPreference(2, robust=True)
    with torch.no_grad():
        wide.log_kappa.fill_(10.0)
    torch.testing.assert_close(_fit(wide, 5), _fit(gauss, 5))
