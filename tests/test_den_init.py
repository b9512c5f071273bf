"""model.den_init=lm: the denoiser's blocks start from the frozen LM's attention and MLP weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import train_micro_run
from torch import nn

from ldlm.algorithms import build
from ldlm.cli import main
from ldlm.denoiser import init_from_lm
from ldlm.errors import UserError
from ldlm.generate import load_model

ROOT = Path(__file__).resolve().parents[1]
LM_SHAPE = ("model.den_width=384", "model.den_layers=2")  # MiniLM-L6: width 384, 12 heads, MLP ratio 4


def lm_weights(block) -> dict[str, torch.Tensor]:
    """A MiniLM block's weights in our Block's names (what init_from_lm should have copied)."""
    a = block.attention
    return {"attn.q.weight": a.self.query.weight,
            "attn.kv.weight": torch.cat([a.self.key.weight, a.self.value.weight]),
            "attn.out.weight": a.output.dense.weight,
            "mlp.fc.weight": block.intermediate.dense.weight, "mlp.fc.bias": block.intermediate.dense.bias,
            "mlp.proj.weight": block.output.dense.weight, "mlp.proj.bias": block.output.dense.bias}


def test_lm_init_copies_the_lm_blocks_and_random_does_not(micro_cfg, tok):
    torch.manual_seed(0)
    model = build(micro_cfg(*LM_SHAPE, "model.den_init=lm"), tok)
    lm_blocks = model.frozen.blocks()
    for ours, theirs in zip(model.denoiser.blocks, lm_blocks):  # the LM's first two blocks, in order
        assert ours.attn.heads == 12  # den_heads 0 = the LM's heads, not model.heads (2 in micro)
        for k, w in lm_weights(theirs).items():
            assert torch.equal(ours.state_dict()[k], w), k
    assert not torch.equal(model.denoiser.blocks[1].attn.q.weight, lm_blocks[0].attention.self.query.weight)
    # the adaLN gates still start at 0, so the untrained denoiser is its input and output projections
    assert all(float(b.ada.weight.detach().abs().max()) == 0 for b in model.denoiser.blocks)
    # the same shape from random weights: the control for what the copied weights bring
    torch.manual_seed(0)
    rand = build(micro_cfg(*LM_SHAPE, "model.den_heads=12"), tok)
    assert rand.denoiser.blocks[0].attn.heads == 12
    assert not torch.equal(rand.denoiser.blocks[0].attn.q.weight, lm_blocks[0].attention.self.query.weight)
    assert [p.shape for p in rand.denoiser.parameters()] == [p.shape for p in model.denoiser.parameters()]


@pytest.mark.parametrize("overrides, message", [
    (("model.den_init=lm",), "set model.den_width and model.mlp_ratio to the LM's (width 384)"),
    ((*LM_SHAPE, "model.den_init=lm", "model.den_heads=4"), "model.den_heads=4 but the frozen LM 'minilm' has 12"),
    (("model.den_width=384", "model.den_layers=7", "model.den_init=lm"), "use model.den_layers<=6"),
])
def test_a_shape_the_lm_cannot_fill_is_a_one_line_error(micro_cfg, tok, overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        build(micro_cfg(*overrides), tok)
    assert "\n" not in str(e.value)


def test_a_non_bert_lm_is_refused_by_name():
    from ldlm.denoiser import Denoiser

    den = Denoiser(4, 8, 32, 1, 2)
    with pytest.raises(UserError, match="needs a BERT-family frozen LM .* use model.den_init=random"):
        init_from_lm(den, nn.ModuleList([nn.Linear(32, 32)]), 2, "gpt2-like")


def test_a_checkpoint_keeps_its_trained_weights_not_the_lms(tmp_path, capsys):
    run = train_micro_run(tmp_path, 60, 1, *LM_SHAPE, "model.den_init=lm", "train.lr=1e-2")
    model = load_model(run, use_ema=False)
    assert model.cfg.model.den_init == "lm"
    q, lm_q = model.denoiser.blocks[0].attn.q.weight, model.frozen.blocks()[0].attention.self.query.weight
    assert not torch.allclose(q, lm_q)  # trained for 2 steps, then loaded: the LM's weights were not copied back
    assert (q - lm_q).abs().max() < 0.1  # ... but they are its weights after two small steps
    # and an unknown value is refused in one line, before any training
    assert main(["train", "--config", str(ROOT / "configs" / "micro.yaml"), "--out", str(tmp_path / "x"),
                 "model.den_init=bert"]) != 0
    assert "model.den_init' is 'bert'; use one of 'random', 'lm'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
