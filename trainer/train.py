"""Inductive training: many optimizer steps over mini-batches of users, each seeing a fresh random
number of their last visible turns (k_min..k_max) and predicting the same users' later comparisons.

The best step is chosen on validation AUC. Seeds are fixed, so a run is reproducible on one machine.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from graphstore.schema import HeldOutGroup, LLMInfo, TrainingSample, UserSubgraph
from trainer.graph import GraphBatch, Request, build_batch, llm_table
from trainer.history import last_turns, select_turns, truncate  # noqa: F401  (re-exported)
from trainer.metrics import pair_metrics
from trainer.config import GMTRouterConfig, TrainConfig  # noqa: F401  (re-exported)
from trainer.model import GMTRouter


@dataclass
class FitResult:
    model: GMTRouter
    metrics: dict  # validation metrics of the chosen step
    best_step: int
    history: list[dict]  # one entry per evaluation
    seconds: float
    step_seconds: float  # mean wall time of one optimizer step


def make_batch(subs: Sequence[UserSubgraph], targets: Sequence[Sequence[HeldOutGroup]],
               llm_emb: Mapping[str, np.ndarray], reverse_edges: bool) -> GraphBatch:
    """One user node per subgraph; one request per target group, its candidates = the group's LLMs."""
    d_m = next(iter(llm_emb.values())).shape[-1] if llm_emb else 384
    zero = np.zeros(d_m, np.float32)
    reqs = [Request(u, g.query_emb, np.stack([llm_emb.get(m, zero) for m in g.llm_ids]), list(g.llm_ids),
                    g.conversation_id, g.crowd)
            for u, gs in enumerate(targets) for g in gs]
    return build_batch(subs, reqs, llm_emb, reverse_edges=reverse_edges, llm_dim=d_m)


def chain_conversations(b: GraphBatch, targets: Sequence[Sequence[HeldOutGroup]]) -> GraphBatch:
    """Let a sample's later targets read its earlier targets as their conversation's previous turns, as a
    router serving them in order would (their feedback came first). A training sample's targets share one
    visible history cut before the first, so without this a follow-up target's previous turn is visible only
    for the first target. Sets ``b.conv_prev`` [N_c] of each target whose conversation has an earlier target
    (the latest such turn before it): that turn's centered rating of each candidate, 0 for one it did not
    answer or when fewer than two answers were rated. Other targets keep what the visible history gives."""
    if b.conv_prev is None:
        return b
    conv = b.conv_prev.numpy().copy()  # [N_c]
    off = 0
    for gs in targets:
        seen: dict[str, tuple[int, dict[str, float]]] = {}  # conversation -> (turn, llm -> centered rating)
        for g in gs:
            if g.conversation_id is not None and g.turn is not None:
                prev = seen.get(g.conversation_id)
                if prev is not None and prev[0] < g.turn:
                    conv[off:off + len(g.llm_ids)] = [prev[1].get(m, 0.0) for m in g.llm_ids]
                if prev is None or prev[0] < g.turn:
                    seen[g.conversation_id] = (g.turn, _centered_ratings(g))
            off += len(g.llm_ids)
    b.conv_prev = torch.from_numpy(conv)
    return b


def training_batch(chunk: Sequence[TrainingSample], ks: Sequence[int], llm_emb: Mapping[str, np.ndarray],
                   config: TrainConfig, reverse_edges: bool) -> tuple[GraphBatch, list[HeldOutGroup]]:
    """One optimizer step's input: each sample's last ``ks[i]`` visible turns and its targets (chained as
    ``config.chain_targets`` says), and the target groups in batch order for :func:`pair_loss`."""
    subs = [last_turns(s.visible, int(k)) for s, k in zip(chunk, ks)]
    targets = [s.targets for s in chunk]
    batch = make_batch(subs, targets, llm_emb, reverse_edges)
    if config.chain_targets:
        batch = chain_conversations(batch, targets)
    return batch, [g for gs in targets for g in gs]


def _centered_ratings(g: HeldOutGroup) -> dict[str, float]:
    """llm -> rating minus the comparison's mean rating (as the response nodes' feature; 0 when unrated or
    fewer than two answers were rated)."""
    r = np.asarray(g.ratings, np.float64)
    has = ~np.isnan(r)
    if has.sum() < 2:
        return {}
    mean = r[has].mean()
    return {m: float(x - mean) for m, x, h in zip(g.llm_ids, r, has) if h}


def pair_loss(scores: torch.Tensor, groups: Sequence[HeldOutGroup], kind: str) -> torch.Tensor:
    ratings = torch.from_numpy(np.concatenate([g.ratings for g in groups]).astype(np.float32))
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(scores, ratings)
    hi, lo = [], []
    off = 0
    for g in groups:
        r = g.ratings
        for a in range(len(r)):
            for b in range(len(r)):
                if r[a] > r[b]:
                    hi.append(off + a)
                    lo.append(off + b)
        off += len(r)
    if not hi:
        return scores.sum() * 0.0
    return F.softplus(-(scores[hi] - scores[lo])).mean()


@torch.no_grad()
def score_samples(model: GMTRouter, samples: Sequence[TrainingSample], llm_emb: Mapping[str, np.ndarray],
                  batch_size: int = 256) -> list[np.ndarray]:
    """Scores for every target group of every sample, in order (the visible subgraphs are used as given)."""
    was = model.training
    model.eval()
    out: list[np.ndarray] = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        b = make_batch([s.visible for s in chunk], [s.targets for s in chunk], llm_emb, model.cfg.reverse_edges)
        s = model(b).numpy()
        out.extend(np.split(s, np.cumsum(b.counts)[:-1]))
    model.train(was)
    return out


def evaluate(model: GMTRouter, samples: Sequence[TrainingSample],
             llms: Mapping[str, LLMInfo] | Mapping[str, np.ndarray] | None = None) -> dict:
    """Accuracy, AUC and mean per-user AUC of the model on the samples' target groups."""
    table = llm_table(llms, model.cfg.llm_prices) if llms is not None else getattr(model, "llm_emb", {})
    scores = score_samples(model, samples, table)
    return pair_metrics([g for s in samples for g in s.targets], scores)


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning rate of ``step`` as a share of ``config.lr``: a linear warm-up over the first 5 % of the steps,
    then a cosine decay to 5 % at the last step (``lr_schedule`` "cosine") or 1 to the end ("constant")."""
    warm = min(1.0, (step + 1) / max(1, config.steps // 20))
    if config.lr_schedule == "constant":
        return warm
    return warm * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(step / max(config.steps, 1), 1.0))))


def _init_model(init, cfg: TrainConfig) -> GMTRouter:
    if init is None:
        return GMTRouter(cfg.model)
    if isinstance(init, GMTRouter):
        return copy.deepcopy(init)
    from trainer.checkpoint import load_checkpoint

    return load_checkpoint(Path(init)).model


@torch.no_grad()
def ema_update(avg: GMTRouter, model: GMTRouter, decay: float, step: int) -> None:
    """avg <- decay' * avg + (1 - decay') * model, parameter by parameter (buffers copied), with
    decay' = min(decay, (1 + step) / (10 + step)) so the early average is not dominated by the initial weights."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for pa, p in zip(avg.parameters(), model.parameters()):
        pa.lerp_(p, 1.0 - d)
    for ba, b in zip(avg.buffers(), model.buffers()):
        ba.copy_(b)


@torch.no_grad()
def pull_back(model: GMTRouter, start: Sequence[torch.Tensor], share: float) -> None:
    """Move every weight ``share`` of the way back to its value in ``start`` (TrainConfig.anchor)."""
    for p, p0 in zip(model.parameters(), start):
        p.sub_(min(share, 1.0) * (p - p0))


@contextmanager
def deterministic_kernels(on: bool = True):
    """torch's deterministic kernels ``on`` (or off) inside the block, the process's setting restored after it,
    also when the block raises. The switch is torch's, so it holds for the whole process meanwhile."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def fit(train: list[TrainingSample], valid: list[TrainingSample], config: TrainConfig,
        init: GMTRouter | str | Path | None = None, progress: bool = True, *,
        llms: Mapping[str, LLMInfo] | Mapping[str, np.ndarray] | None = None) -> FitResult:
    """Train on ``train`` samples, select the step with the best validation AUC; returns that model.

    ``llms`` maps every llm id in the samples to its description embedding (unknown ids get zeros);
    ``init`` (a model or a checkpoint path) continues training from there. With ``config.deterministic`` (the
    default) the same inputs and seed give the same weights to the bit, with any number of torch threads:
    torch's deterministic kernels are on while it trains (with several threads the default CPU backward of a
    gather adds into shared rows in whatever order the threads reach them); see :func:`deterministic_kernels`.
    """
    if not train:
        raise ValueError("fit needs at least one training sample")
    with deterministic_kernels(config.deterministic):
        return _fit(train, valid, config, init, progress, llms)


def _fit(train: list[TrainingSample], valid: list[TrainingSample], config: TrainConfig,
         init: GMTRouter | str | Path | None, progress: bool,
         llms: Mapping[str, LLMInfo] | Mapping[str, np.ndarray] | None) -> FitResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = _init_model(init, config)
    table = llm_table(llms, model.cfg.llm_prices) if llms is not None else dict(getattr(model, "llm_emb", {}))
    model.llm_emb = table
    avg = copy.deepcopy(model) if config.ema > 0 else None  # the weight average, when config.ema
    judged = avg if avg is not None else model  # what is validated and returned
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = [p.detach().clone() for p in model.parameters()] if config.anchor > 0 else None  # config.anchor's target
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config))
    vrng = np.random.default_rng(config.seed + 1)
    vsub = [valid[i] for i in np.sort(vrng.choice(len(valid), min(len(valid), config.max_valid), replace=False))] \
        if valid else []
    best = (-1.0, 0, copy.deepcopy(model.state_dict()), {})
    history: list[dict] = []
    t0 = time.perf_counter()
    step_time = 0.0
    bar = range(config.steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc="training GMTRouter", unit="step")
    model.train()
    running = None
    for step in bar:
        ts = time.perf_counter()
        idx = rng.choice(len(train), min(config.batch_size, len(train)), replace=False)
        chunk = [train[i] for i in idx]
        ks = rng.integers(config.k_min, config.k_max + 1, len(chunk))
        batch, groups = training_batch(chunk, ks, table, config, model.cfg.reverse_edges)
        loss = pair_loss(model(batch), groups, config.loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if start is not None:
            pull_back(model, start, opt.param_groups[0]["lr"] * config.anchor)
        sched.step()
        if avg is not None:
            ema_update(avg, model, config.ema, step)
        step_time += time.perf_counter() - ts
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        last = step == config.steps - 1
        if vsub and ((step + 1) % config.eval_every == 0 or last):
            m = evaluate(judged, vsub, table)
            m["step"] = step + 1
            m["loss"] = running
            history.append(m)
            if m["auc"] > best[0]:
                best = (m["auc"], step + 1, copy.deepcopy(judged.state_dict()), m)
            if progress:
                bar.set_postfix(loss=f"{running:.3f}", val_auc=f"{m['auc']:.3f}", best=f"{best[0]:.3f}")
    if vsub:
        model.load_state_dict(best[2])
    else:  # nothing to choose on: the last weights (their average, with config.ema)
        if avg is not None:
            model.load_state_dict(avg.state_dict())
        best = (float("nan"), config.steps, None, {})
    model.eval()
    return FitResult(model, best[3], best[1], history, time.perf_counter() - t0, step_time / max(config.steps, 1))
