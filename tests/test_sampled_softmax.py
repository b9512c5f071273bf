"""recipe.softmax_negatives: training's token CEs over the batch's targets + K uniform negatives (log-Q corrected)."""
import math

import torch
import torch.nn.functional as F

from ldlm.algorithms.ldlm import sampled_softmax

from conftest import micro_model_and_batch as _model_and_batch


def test_candidates_hold_every_target_once_and_correct_only_the_drawn():
    torch.manual_seed(0)
    target = torch.tensor([5, 9, 5, 120, 9, 0])
    cand, corr = sampled_softmax(target, 200, 30)
    assert torch.equal(cand, torch.unique(cand))  # sorted, each once (searchsorted relies on it)
    assert set(target.tolist()) <= set(cand.tolist())
    assert 4 < cand.numel() <= 4 + 30
    q = 1 - (1 - 1 / 196) ** 30  # a given non-target token is drawn at least once in 30 draws from 196
    for c, x in zip(cand.tolist(), corr.tolist()):
        assert x == (0.0 if c in (0, 5, 9, 120) else math.log(q)) or math.isclose(x, math.log(q), rel_tol=1e-5)
    # every token a target: nothing to draw, no correction, the full softmax
    cand, corr = sampled_softmax(torch.arange(7), 7, 30)
    assert torch.equal(cand, torch.arange(7)) and not corr.any()


def test_corrected_candidates_estimate_the_full_normaliser():
    torch.manual_seed(1)
    V, logits = 300, torch.randn(300) * 2
    target = torch.tensor([3, 17, 250])
    full = logits.exp().sum()
    est, raw = [], []
    for _ in range(3000):
        cand, corr = sampled_softmax(target, V, 40)
        est.append((logits[cand] - corr).exp().sum())
        raw.append(logits[cand].exp().sum())
    assert abs(torch.stack(est).mean() / full - 1) < 0.03  # unbiased with the log-Q correction
    assert torch.stack(raw).mean() / full < 0.3  # without it the normaliser is far too small


def test_ldlm_uses_the_sampled_softmax_in_training_and_the_full_one_in_evaluation(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "recipe.softmax_negatives=64")
    h, ids, mask = batch["h"], batch["ids"], batch["mask"]
    target = model.readout.to_local(ids[mask])
    full_ce = F.cross_entropy(model.token_logits(h, mask), target)
    torch.manual_seed(0)
    ce, acc = model._token_ce(h, ids, mask)
    assert acc is None  # an accuracy over the sampled candidates would mislead
    assert not torch.isclose(ce, full_ce)  # a different (estimated) loss
    # its mean over draws estimates the full CE (biased low a little: log of an unbiased normaliser, Jensen)
    draws = torch.stack([model._token_ce(h, ids, mask)[0].detach() for _ in range(40)])
    assert 0.9 * full_ce < draws.mean() <= full_ce + 0.05
    ce.backward()
    assert model.readout.head[0].weight.grad.abs().sum() > 0
    model.eval()
    ce_eval, acc_eval = model._token_ce(h, ids, mask)
    assert torch.allclose(ce_eval, full_ce) and acc_eval is not None
