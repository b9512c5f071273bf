"""The paper's recipe (recipe=paper): MSE-only latent decoder with a separate token decoder trained on
stopgrad(h_hat), the frozen LM's layer, the per-noise-level denoising diagnostic, the fp32 log-SNR sampler."""
import pytest
import torch

from ldlm.config import RECIPE_PRESETS
from ldlm.errors import UserError
from ldlm.trainer import setup_model

from conftest import micro_model_and_batch as _model_and_batch

PARTS = ("encoder", "denoiser", "decoder", "tok_decoder", "readout")




def _grad_of(model, batch, term: str) -> dict:
    """Which parts get a gradient from the decoder loss ('all') or from its token-CE term alone ('ce')."""
    rc = model.cfg.recipe
    if term == "ce":  # isolate the token-CE term by zeroing the others' weights
        rc.lambda_dec, rc.lambda_read = 0.0, 0.0
    model.zero_grad(set_to_none=True)
    z0 = model.encode(batch["h"], batch["mask"])
    loss, _ = model.decoder_loss(z0, batch["h"], batch["ids"], batch["mask"])
    loss.backward()
    rc.lambda_dec, rc.lambda_read = 1.0, 1.0
    return {p: any(q.grad is not None and q.grad.abs().sum() > 0 for q in getattr(model, p).parameters())
            for p in PARTS if any(True for _ in getattr(model, p).parameters())}


def test_mse_decoder_loss_keeps_token_ce_out_of_the_latents(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "recipe.decoder_loss=mse", "model.tok_dec_layers=1")
    ce_only = _grad_of(model, batch, "ce")
    # the token CE trains the token decoder and readout only: it never reaches the latent decoder or encoder
    assert ce_only == {"encoder": False, "denoiser": False, "decoder": False, "tok_decoder": True, "readout": True}
    full = _grad_of(model, batch, "all")
    assert full["encoder"] and full["decoder"] and full["tok_decoder"]  # the MSE shapes the latents


def test_ce_and_mixed_decoder_losses_train_the_latent_decoder_through_tokens(micro_cfg):
    for kind in ("ce", "mse+ce"):
        model, batch = _model_and_batch(micro_cfg, f"recipe.decoder_loss={kind}", "model.tok_dec_layers=1")
        ce_only = _grad_of(model, batch, "ce")
        assert ce_only["encoder"] and ce_only["decoder"] and ce_only["tok_decoder"], kind
    model, batch = _model_and_batch(micro_cfg, "recipe.decoder_loss=ce")
    _, logs = model.loss(batch, 5)
    assert "read_ce" not in logs  # 'ce' has no hidden-state MSE and no readout anchor in the loss


def test_token_decoder_starts_as_the_identity(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "model.tok_dec_layers=2")
    h = batch["h"]
    assert torch.allclose(model.tok_decoder(h), h)  # zero-initialised output: the readout works from step 0
    assert sum(p.numel() for p in model.tok_decoder.parameters()) > 0
    model0, _ = _model_and_batch(micro_cfg, "model.tok_dec_layers=0")
    assert sum(p.numel() for p in model0.tok_decoder.parameters()) == 0


def test_paper_preset_sets_every_component(micro_cfg):
    cfg = micro_cfg("recipe=paper")
    assert cfg.recipe.decoder_loss == "mse" and cfg.recipe.warmup == "sigmoid"
    assert cfg.recipe.dec_noise == "gaussian" and cfg.recipe.dec_noise_std == 3.0
    assert cfg.model.schedule_d == 3.0 and cfg.model.lm_layer == -3 and cfg.recipe.timesteps == "adaptive"
    # explicit keys after the preset win
    assert micro_cfg("recipe=paper", "recipe.dec_noise_std=1").recipe.dec_noise_std == 1.0
    naive = micro_cfg("recipe=naive")
    assert naive.recipe.dec_noise_std == 0.0 and naive.recipe.dec_noise_max == 0.0
    assert set(RECIPE_PRESETS) >= {"full", "paper", "naive"}


def test_warmup_weight_logged_per_recipe(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "recipe.warmup=sigmoid", "recipe.warmup_steps=8")
    ws = []
    for step in (0, 4, 8):
        _, logs = model.loss(batch, step)
        ws.append(logs["w_enc"])
    assert ws[0] == 0.0 and 0.0 < ws[1] < 0.5 and ws[2] == 1.0


def test_lm_layer_selects_a_hidden_layer(micro_cfg):
    from ldlm.frozen_lm import FrozenLM, load_tokenizer

    tok = load_tokenizer("minilm")
    enc = tok(["to be or not to be"], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    last, third = FrozenLM("minilm", -1), FrozenLM("minilm", -3)
    h_last, h_third = last.raw_features(ids, mask), third.raw_features(ids, mask)
    out = last.lm(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    assert torch.allclose(h_last, out.hidden_states[-1], atol=1e-5)
    assert torch.allclose(h_third, out.hidden_states[-3], atol=1e-5)
    assert torch.allclose(FrozenLM("minilm", 2).raw_features(ids, mask), out.hidden_states[2], atol=1e-5)
    assert not torch.allclose(h_last, h_third)
    # an inner layer's forward stops at its block: the blocks above it never run
    ran = []
    for i, blk in enumerate(third.lm.encoder.layer):
        blk.register_forward_hook(lambda *_, i=i: ran.append(i))
    third.raw_features(ids, mask)
    assert ran == [0, 1, 2, 3]
    assert set(third.state_dict()) == set(last.state_dict())  # the stop block is not a second submodule
    with pytest.raises(UserError, match="lm_layer=9"):
        FrozenLM("minilm", 9)
    with pytest.raises(UserError, match="embedding layer"):
        micro_cfg("model.lm_layer=0")


def test_validation_reports_denoising_ratio_per_noise_level(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, b=8)
    model.eval()
    out = model.evaluate(batch, torch.Generator().manual_seed(0))
    keys = [k for k in out if k.startswith("den_ratio_a")]
    assert sorted(keys) == ["den_ratio_a20", "den_ratio_a30", "den_ratio_a50", "den_ratio_a80"]
    assert all(v > 0 for k, v in out.items() if k in keys)


def test_sampling_runs_in_fp32_on_the_chosen_grid(micro_cfg, monkeypatch):
    import ldlm.algorithms.ldlm as ldlm_mod
    from ldlm.generate import generate

    model, _ = _model_and_batch(micro_cfg)
    model.eval()
    seen = {}
    real = ldlm_mod.reverse_diffusion

    def spy(*args, **kw):
        seen["grid"] = kw.get("grid")
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return real(*args, **kw)

    monkeypatch.setattr(ldlm_mod, "reverse_diffusion", spy)
    recs = generate(model, num=2, steps=3)
    assert len(recs) == 2 and seen == {"grid": "uniform", "autocast": False}
    generate(model, num=2, steps=3, grid="logsnr", bf16=True)
    assert seen == {"grid": "logsnr", "autocast": True}


def test_tencdm_baseline_trains_samples_and_has_no_encoder(root, tmp_path):
    """algo=tencdm through the same trainer and sampler: diffusion on the frozen LM's states (L x D)."""
    import os

    from ldlm.config import load_config
    from ldlm.generate import generate, load_model
    from ldlm.trainer import Trainer

    cfg = load_config(os.path.join(root, "configs", "micro-tencdm.yaml"),
                      ["train.steps=4", "train.eval_every=4", f"data.cache_dir={tmp_path / 'cache'}"])
    tr = Trainer(cfg, str(tmp_path / "run"), quiet=True)
    model = tr.model
    assert sum(p.numel() for p in model.encoder.parameters()) == 0
    assert sum(p.numel() for p in model.decoder.parameters()) == 0
    assert model.latent_shape() == (cfg.data.seq_len, model.frozen.hidden)
    h = torch.randn(2, cfg.data.seq_len, model.frozen.hidden)
    assert torch.equal(model.encode(h, torch.ones(2, cfg.data.seq_len, dtype=torch.bool)), h)
    out = tr.train()
    assert out["step"] == 4 and "recon_acc" in out["valid"] and "den_ratio_a50" in out["valid"]
    recs = generate(load_model(tmp_path / "run"), num=3, steps=3)
    assert len(recs) == 3 and recs[0]["algo"] == "tencdm"
    with pytest.raises(UserError, match="decoder_loss=ce"):
        setup_model(load_config(os.path.join(root, "configs", "micro-tencdm.yaml"), ["recipe.decoder_loss=mse"]),
                    torch.device("cpu"))


def test_resume_with_reordered_parameters_is_a_clear_error(micro_cfg, tmp_path):
    """Optimizer state is stored by parameter position; a checkpoint whose order no longer fits fails at load."""
    from ldlm.trainer import Trainer

    cfg = micro_cfg("train.steps=2", "train.save_every=2", f"data.cache_dir={tmp_path / 'cache'}")
    Trainer(cfg, str(tmp_path / "run"), quiet=True).train()
    import ldlm.algorithms.ldlm as mod

    real_init = mod.LDLM.__init__

    def swapped(self, cfg, tok):  # register the decoder before the denoiser: same parameters, other order
        real_init(self, cfg, tok)
        den = self._modules.pop("denoiser")
        self._modules["denoiser"] = den

    mod.LDLM.__init__ = swapped
    try:
        cfg2 = micro_cfg("train.steps=4", "train.save_every=2", f"data.cache_dir={tmp_path / 'cache'}")
        with pytest.raises(UserError, match="optimizer state does not fit"):
            Trainer(cfg2, str(tmp_path / "run"), resume=True, quiet=True)
    finally:
        mod.LDLM.__init__ = real_init
