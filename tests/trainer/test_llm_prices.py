"""GMTRouterConfig.llm_prices: the LLMs' prices enter the model next to their description embeddings, in
training, in a checkpoint and when served."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from graphstore.schema import LLMInfo
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import LLM_PRICE_FEATURES
from trainer.data import online_samples, training_samples
from trainer.graph import llm_table, llm_vector
from trainer.model import GMTRouter, GMTRouterConfig
from trainer.scorer import Scorer
from trainer.train import TrainConfig, evaluate, fit

D = 32


def test_llm_vector_appends_the_log_prices_only_when_asked():
    info = LLMInfo("m", "a model", 0.5, 2.0, np.arange(D, dtype=np.float32))
    assert llm_vector(info) is info.embedding
    v = llm_vector(info, prices=True)
    assert v.shape == (D + LLM_PRICE_FEATURES,) and v.dtype == np.float32
    np.testing.assert_allclose(v[:D], info.embedding)
    np.testing.assert_allclose(v[D:], np.log1p([0.5, 2.0]), rtol=1e-6)
    raw = {"x": np.ones(D + LLM_PRICE_FEATURES, np.float32)}  # a vector is taken as the model's input as it is
    assert llm_table(raw, prices=True)["x"].shape == (D + LLM_PRICE_FEATURES,)


def test_the_priced_model_reads_prices_where_it_reads_llms_and_not_for_queries():
    cfg = GMTRouterConfig(emb_dim=D, hidden=16, topics=4, pref_dim=6, heads=2, llm_prices=True)
    m = GMTRouter(cfg)
    width = D + LLM_PRICE_FEATURES
    assert cfg.llm_dim == width and GMTRouterConfig(emb_dim=D).llm_dim == D
    assert m.encoder.m.in_features == m.head.m.in_features == m.code.in_features == width
    assert m.phi[0].in_features == cfg.topics + width + cfg.hidden
    assert m.topics.lin.in_features == D  # queries keep the encoder's width
    assert GMTRouterConfig.from_dict(GMTRouterConfig(emb_dim=D).to_dict()).llm_prices is False


@pytest.fixture(scope="module")
def priced(tiny_ds):
    """A priced model trained a few steps on the tiny benchmark."""
    torch.manual_seed(0)
    cfg = TrainConfig(model=GMTRouterConfig(emb_dim=D, hidden=32, llm_prices=True), steps=10, batch_size=8,
                      eval_every=10, k_max=20)
    return fit(training_samples(tiny_ds, "train", turns=20), [], cfg, progress=False, llms=tiny_ds.llms).model.eval()


def _price_shift(scorer: Scorer, tiny_ds) -> np.ndarray:
    """How each candidate's score moves when the first candidate's prices change, all else equal."""
    s = online_samples(tiny_ds, "test", history=10)[0]
    cands = list(tiny_ds.llms.values())[:3]
    dearer = [dataclasses.replace(cands[0], llm_id="dearer", price_in=9.0, price_out=30.0)] + cands[1:]
    cheap = [dataclasses.replace(cands[0], llm_id="cheaper", price_in=0.0, price_out=0.0)] + cands[1:]
    q = s.targets[0].query_emb
    a, b = scorer.score_batch([(s.visible, q, dearer), (s.visible, q, cheap)])
    return a - b


def test_a_priced_checkpoint_round_trips_and_serves_with_prices(tmp_path, priced, tiny_ds):
    te = online_samples(tiny_ds, "test", history=10)[:40]
    assert next(iter(priced.llm_emb.values())).shape == (D + LLM_PRICE_FEATURES,)
    p = save_checkpoint(priced, tmp_path / "p.pt", version="v-priced", llm_catalog=tiny_ds.llms)
    ck = load_checkpoint(p)
    assert ck.model.cfg.llm_prices and evaluate(ck.model, te) == evaluate(priced, te)
    assert evaluate(priced, te, tiny_ds.llms) == evaluate(priced, te)  # a catalog is priced as in training
    shift = _price_shift(Scorer.load(p), tiny_ds)
    assert abs(shift[0]) > 1e-4  # the price reached the candidate's score
    # the unpriced model reads the description alone: the same change of price moves nothing
    torch.manual_seed(0)
    plain = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=32)).eval()
    q = save_checkpoint(plain, tmp_path / "q.pt", version="v-plain", llm_catalog=tiny_ds.llms)
    np.testing.assert_allclose(_price_shift(Scorer.load(q), tiny_ds), 0.0, atol=1e-6)
