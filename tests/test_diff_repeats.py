"""recipe.diff_repeats: k noise draws per sequence's latents in L_diff (MAR's diffusion batch multiplier)."""
import torch

from conftest import micro_model_and_batch as _model_and_batch


def _loss_and_grad(model, z0, cond=None, seed=5, rows_repeated=1):
    """L_diff and its gradient into z0 under a fixed seed, each row of z0 first repeated `rows_repeated` times."""
    z = z0.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    loss, _ = model.diffusion_loss(z.repeat_interleave(rows_repeated, 0), 1.0, cond)
    loss.backward()
    return loss.detach(), z.grad


def test_k_repeats_are_one_draw_on_each_sequence_repeated_k_times(micro_cfg):
    """Loss and encoder gradient with k = 3 equal those of one draw on the batch with each row repeated 3 times
    (the same random draws): k noisings per sequence, averaged, at the scale of one draw."""
    model, _ = _model_and_batch(micro_cfg, "recipe.diff_repeats=3", "model.self_cond_prob=0")
    n, d = model.latent_shape()
    z0 = torch.randn(4, n, d)
    seen = []
    model.timesteps.update = lambda t, per_sample: seen.append(t.numel())
    loss3, grad3 = _loss_and_grad(model, z0)
    assert seen == [12]  # the timestep sampler learns from all 4 x 3 draws

    model.cfg.recipe.diff_repeats = 1
    loss1, grad1 = _loss_and_grad(model, z0, rows_repeated=3)
    assert torch.allclose(loss3, loss1)
    assert torch.allclose(grad3, grad1)
    # and not the loss of one draw per sequence
    loss_once, _ = _loss_and_grad(model, z0)
    assert not torch.isclose(loss3, loss_once)


def test_repeats_keep_given_latents_out_of_the_loss(micro_cfg):
    model, _ = _model_and_batch(micro_cfg, "recipe.diff_repeats=2")
    n, d = model.latent_shape()
    z0 = torch.randn(4, n, d)
    given = torch.zeros(4, n, dtype=torch.bool)
    given[:2, : n // 2] = True
    loss, grad = _loss_and_grad(model, z0, (z0.clone(), given))
    assert torch.isfinite(loss)
    assert (grad[given] == 0).all() and (grad[~given] != 0).all()
