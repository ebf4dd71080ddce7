"""``hgt_forward`` is PyG's ``HGTConv`` forward, op for op in result: same outputs and same gradients."""

from __future__ import annotations

import pytest
import torch

from trainer.graph import metadata
from trainer.hgt_fast import hgt_forward
from torch_geometric.nn import HGTConv

H, F_ = 4, 16


def random_graph(gen: torch.Generator, meta, n_max: int = 12, empty: tuple = ()) -> tuple[dict, dict]:
    """Random edges, except that responses and turns pair up one to one as in a served batch (the
    ``arange`` indices hgt_forward does not gather)."""
    nodes, edges = meta
    n = {t: int(torch.randint(1, n_max, (1,), generator=gen)) for t in nodes}
    n["response"] = n["turn"]
    x = {t: torch.randn(n[t], F_, generator=gen) for t in nodes}
    ei = {}
    for et in edges:
        s, _, d = et
        m = 0 if et in empty else int(torch.randint(0, 3 * n_max, (1,), generator=gen))
        ei[et] = torch.stack([torch.randint(0, n[s], (m,), generator=gen), torch.randint(0, n[d], (m,), generator=gen)])
    if ("response", "answer_of", "turn") not in empty:
        ei[("response", "answer_of", "turn")] = torch.arange(n["turn"]).repeat(2, 1)
    return x, ei


@pytest.mark.parametrize("out_types", [None, ("user",)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_same_outputs_and_gradients_as_pyg(seed, reverse, out_types):
    torch.manual_seed(seed)
    meta = metadata(reverse)
    conv = HGTConv(F_, F_, meta, heads=H)
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():  # reset_parameters sets skip and p_rel to ones: make every parameter matter
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    empty = (meta[1][-1],) if seed % 2 else ()  # an edge type with no edges in the batch
    x, ei = random_graph(gen, meta, empty=empty)

    ref = conv(x, ei)
    got = hgt_forward(conv, x, ei, out_types=out_types)
    ref = {t: v for t, v in ref.items() if v is not None and (out_types is None or t in out_types)}
    assert got.keys() == ref.keys()
    for t in ref:
        torch.testing.assert_close(got[t], ref[t], rtol=1e-5, atol=1e-5)

    loss_ref = sum((v * torch.arange(v.numel()).view_as(v).sin()).sum() for v in ref.values())
    g_ref = torch.autograd.grad(loss_ref, list(conv.parameters()), allow_unused=True)
    loss_got = sum((v * torch.arange(v.numel()).view_as(v).sin()).sum() for v in got.values())
    g_got = torch.autograd.grad(loss_got, list(conv.parameters()), allow_unused=True)
    for a, b in zip(g_ref, g_got):
        if a is None or b is None:
            assert (a is None or not a.abs().sum()) and (b is None or not b.abs().sum())
        else:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
