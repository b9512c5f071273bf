"""Two-stage training (recipe.two_stage, TEncDM/COSMOS style): stage 1 trains the autoencoder alone,
stage 2 the denoiser alone on frozen latents (fixed encoder, running latent statistics); and a joint run
that ends with stage 2 (recipe.denoiser_tail)."""
import pytest
import torch

from ldlm.errors import UserError

from conftest import micro_model_and_batch as _model_and_batch


def _grads(model, batch, step):
    model.zero_grad(set_to_none=True)
    loss, logs = model.loss(batch, step)
    loss.backward()
    got = {}
    for part in ("encoder", "denoiser", "decoder", "readout"):
        ps = [p for p in getattr(model, part).parameters() if p.requires_grad]
        got[part] = any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps)
    return got, logs


def test_stage1_trains_only_the_autoencoder(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "recipe.two_stage=0.5")
    got, logs = _grads(model, batch, step=2)  # 2 < 0.5 * 10
    assert logs["stage"] == 1 and "diff" not in logs and "dec_ce" in logs
    assert got == {"encoder": True, "denoiser": False, "decoder": True, "readout": True}


def test_stage2_trains_only_the_denoiser_on_fixed_latents(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "recipe.two_stage=0.5")
    bn = model.encoder.norm.bn
    with torch.no_grad():  # running statistics as stage 1 would have left them
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    seen = []
    hook = model.encoder.norm.register_forward_hook(lambda m, i, o: seen.append((m.training, o.detach())))
    got, logs = _grads(model, batch, step=5)
    hook.remove()
    assert logs["stage"] == 2 and "diff" in logs and "dec_ce" not in logs
    assert got == {"encoder": False, "denoiser": True, "decoder": False, "readout": False}
    # latent normalisation ran in eval mode (running statistics, untouched); training mode restored
    assert [t for t, _ in seen] == [False]
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2] and model.encoder.training
    # so the latents are what the frozen encoder gives at evaluation, whatever else is in the batch
    model.encoder.eval()
    with torch.no_grad():
        z_eval = model.encoder(batch["h"], batch["mask"])
        z_half = model.encoder(batch["h"][:3], batch["mask"][:3])
    model.encoder.train()
    assert torch.allclose(seen[0][1], z_eval) and torch.allclose(seen[0][1][:3], z_half, atol=1e-5)


def test_joint_training_is_unchanged_by_default(micro_cfg):
    model, batch = _model_and_batch(micro_cfg, "recipe.warmup_start=0", "recipe.warmup_ramp=0")
    got, logs = _grads(model, batch, step=5)
    assert "stage" not in logs and "diff" in logs and "dec_ce" in logs
    assert all(got.values())


def test_two_stage_share_is_validated(micro_cfg):
    with pytest.raises(UserError, match="two_stage"):
        micro_cfg("recipe.two_stage=1.0")


def test_denoiser_tail_is_joint_until_the_last_share(micro_cfg):
    # horizon 10, tail 0.3: steps 0-6 joint, 7-9 the denoiser alone on frozen latents
    model, batch = _model_and_batch(micro_cfg, "recipe.denoiser_tail=0.3", "recipe.warmup_start=0",
                                    "recipe.warmup_ramp=0")
    assert [model.stage(s) for s in range(10)] == [0] * 7 + [2] * 3
    got, logs = _grads(model, batch, step=6)
    assert "stage" not in logs and all(got.values())
    got, logs = _grads(model, batch, step=7)
    assert logs["stage"] == 2 and "diff" in logs and "dec_ce" not in logs
    assert got == {"encoder": False, "denoiser": True, "decoder": False, "readout": False}


@pytest.mark.parametrize("overrides, match", [
    (["recipe.denoiser_tail=1.0"], "denoiser_tail"),
    (["recipe.denoiser_tail=-0.1"], "denoiser_tail"),
    (["recipe.denoiser_tail=0.2", "recipe.two_stage=0.5"], "set one of them to 0"),
])
def test_denoiser_tail_is_validated(micro_cfg, overrides, match):
    with pytest.raises(UserError, match=match):
        micro_cfg(*overrides)
