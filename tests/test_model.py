"""Shapes, masks and invariants of the LDLM parts, the config system and the corpus readers."""
import json

import pytest
import torch

from ldlm.autoencoder import LatentDecoder, LatentEncoder, LatentNorm, Readout
from ldlm.config import Config, load_config, set_key
from ldlm.data import BatchIterator, group_passages, parse_play, read_corpus_file, split_passages
from ldlm.denoiser import Denoiser
from ldlm.errors import UserError
from ldlm.sampling import reverse_diffusion
from ldlm.schedules import TanSchedule

B, L, D, N, d = 4, 12, 32, 3, 8


def test_encoder_shapes_and_padding_is_ignored():
    enc = LatentEncoder(D, L, N, d, width=32, layers=2, heads=2, norm="layer").eval()
    h = torch.randn(B, L, D)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, 7:] = False
    z = enc(h, mask)
    assert z.shape == (B, N, d)
    h2 = h.clone()
    h2[:, 7:] = torch.randn(B, L - 7, D) * 10  # garbage where the mask is off
    assert torch.allclose(enc(h2, mask), z, atol=1e-5)
    h3 = h.clone()
    h3[:, 3] += 1.0  # a real token changes the latent
    assert not torch.allclose(enc(h3, mask), z, atol=1e-4)


def test_batch_latent_norm_gives_unit_variance_across_sequences():
    norm = LatentNorm("batch", N, d).train()
    z = torch.randn(256, N, d) * 5 + torch.randn(1, N, d) * 3  # a shared offset per position
    out = norm(z)
    assert torch.allclose(out.mean(0), torch.zeros(N, d), atol=1e-4)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(N, d), atol=1e-3)
    norm.eval()  # running statistics at evaluation
    assert norm(z[:2]).shape == (2, N, d)


def test_decoder_denoiser_readout_shapes():
    dec = LatentDecoder(D, L, N, d, width=32, layers=1, heads=2)
    assert dec(torch.randn(B, N, d)).shape == (B, L, D)
    den = Denoiser(N, d, width=32, layers=2, heads=2)
    t = torch.rand(B)
    z = torch.randn(B, N, d)
    assert den(z, t).shape == (B, N, d)
    assert den(z, t, torch.randn(B, N, d)).shape == (B, N, d)
    emb = torch.randn(50, D)
    for kind in ("tied", "linear"):
        assert Readout(D, 50, kind, emb)(torch.randn(B, L, D)).shape == (B, L, 50)


def test_denoiser_uses_time_and_self_conditioning():
    den = Denoiser(N, d, width=32, layers=2, heads=2)
    for p in den.parameters():  # leave the zero-init so the conditioning paths carry signal
        torch.nn.init.normal_(p, std=0.1)
    z = torch.randn(B, N, d)
    a = den(z, torch.full((B,), 0.1))
    assert not torch.allclose(a, den(z, torch.full((B,), 0.9)))
    assert not torch.allclose(a, den(z, torch.full((B,), 0.1), torch.ones(B, N, d)))


def test_v_prediction_is_the_input_at_t0_and_minus_the_output_at_t1():
    # z0 = alpha z_t - sigma F: at t = 0 the estimate is z_t whatever the network says, at t = 1 it is -F, and in
    # between it mixes the two with the schedule's alpha and sigma (the x0 model returns F itself)
    torch.manual_seed(0)
    sched = TanSchedule(9.0)
    x0 = Denoiser(N, d, width=32, layers=1, heads=2)
    v = Denoiser(N, d, width=32, layers=1, heads=2, prediction="v", schedule=sched)
    v.load_state_dict(x0.state_dict())  # same network: only what its output means differs
    for p in v.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x0.load_state_dict(v.state_dict())
    z = torch.randn(B, N, d)
    f = x0(z, torch.full((B,), 0.3))
    t = torch.full((B,), 0.3)
    a, s = sched.alpha(t)[:, None, None], sched.sigma(t)[:, None, None]
    assert torch.allclose(v(z, t), a * z - s * f, atol=1e-6)
    assert torch.allclose(v(z, torch.zeros(B)), z, atol=1e-6)
    assert torch.allclose(v(z, torch.ones(B)), -x0(z, torch.ones(B)), atol=1e-5)
    with pytest.raises(ValueError, match="prediction"):
        Denoiser(N, d, width=32, layers=1, heads=2, prediction="v")  # v needs the schedule's alpha and sigma


@pytest.mark.parametrize("solver", ["sde", "ode"])
def test_reverse_diffusion_with_perfect_denoiser_returns_its_prediction(solver):
    target = torch.randn(1, N, d)

    def oracle(z, t, z_sc=None):
        return target.expand(z.shape[0], -1, -1)

    g = torch.Generator().manual_seed(0)
    out = reverse_diffusion(oracle, TanSchedule(9.0), (5, N, d), steps=10, solver=solver, generator=g)
    assert torch.allclose(out, target.expand(5, -1, -1))


def test_reverse_diffusion_return_state_stops_one_step_early_at_the_noisy_state():
    # with a perfect denoiser the state at the last grid time t_1 is alpha z0 + sigma eps (ODE: eps is the start
    # noise, kept exactly), not the prediction itself
    target, sched, calls = torch.randn(1, N, d), TanSchedule(9.0), []

    def oracle(z, t, z_sc=None):
        calls.append(float(t[0]))
        return target.expand(z.shape[0], -1, -1)

    g = torch.Generator().manual_seed(0)
    z1 = torch.randn((3, N, d), generator=torch.Generator().manual_seed(0))
    state = reverse_diffusion(oracle, sched, (3, N, d), steps=10, solver="ode", generator=g, return_state=True)
    assert len(calls) == 9 and min(calls) > 0.1
    t_last = torch.tensor([0.1])
    expected = sched.alpha(t_last) * target + sched.sigma(t_last) * z1
    assert torch.allclose(state, expected, atol=1e-5)


def test_ode_solver_is_deterministic_given_the_start():
    den = Denoiser(N, d, width=32, layers=1, heads=2).eval()
    outs = [reverse_diffusion(den, TanSchedule(9.0), (2, N, d), 8, "ode", 1.0, torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(outs[0], outs[1])


# ------------------------------------------------------------------------------ config
def test_config_overrides_and_presets(root):
    cfg = load_config(f"{root}/configs/micro.yaml", ["train.steps=7", "recipe=naive", "model.latent_norm=layer"])
    assert cfg.train.steps == 7 and cfg.model.latent_norm == "layer"
    assert cfg.recipe.decoder_loss == "ce" and cfg.recipe.timesteps == "uniform"
    assert cfg.recipe.dec_noise_max == 0.0 and cfg.recipe.warmup_start == 0.0
    full = load_config(f"{root}/configs/micro.yaml")
    assert full.recipe.decoder_loss == "mse+ce" and full.recipe.timesteps == "adaptive"
    assert json.loads(json.dumps(cfg.to_dict()))["train"]["steps"] == 7


@pytest.mark.parametrize("override, msg", [
    ("train.stepz=3", "unknown config key 'train.stepz'"),
    ("train.steps=abc", "expects int"),
    ("recipe=fancy", "unknown recipe preset"),
    ("model.readout=mlp", "model.readout"),
    ("train.batch_size=0", "must be positive"),
    ("recipe.diff_repeats=0", "'recipe.diff_repeats' must be positive"),
    ("model.prediction=eps", "model.prediction"),
    ("nonsense", "not key=value"),
])
def test_config_errors(root, override, msg):
    with pytest.raises(UserError, match=msg):
        load_config(f"{root}/configs/micro.yaml", [override])


def test_bool_and_float_coercion():
    cfg = Config()
    set_key(cfg, "train.bf16", "false")
    set_key(cfg, "train.lr", "3e-4")
    assert cfg.train.bf16 is False and cfg.train.lr == pytest.approx(3e-4)


# ------------------------------------------------------------------------------ data
PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter HAMLET and HORATIO_

**HAMLET**  
To be, or not to be,  
that is the question.

**HORATIO**  
My lord? _Aside_ Indeed.

*Exit HORATIO, lamenting
the weather.*

**HAMLET**  
Alone.
"""


def test_parse_play_strips_speakers_directions_headers():
    scenes = parse_play(PLAY)
    assert scenes == [[["To be, or not to be,", "that is the question."], ["My lord? Indeed."], ["Alone."]]]
    passages = group_passages(scenes, words=10)
    assert passages[0].startswith("To be, or not to be, that is the question.")
    assert all("HAMLET" not in p and "Exit" not in p and "_" not in p for p in passages)


def test_builtin_corpus_split_is_deterministic():
    from ldlm.data import shakespeare_passages

    p = shakespeare_passages(40)
    assert len(p) > 10000
    a = split_passages(p, 0.02, 0)
    b = split_passages(p, 0.02, 0)
    assert a == b and len(a[1]) == round(len(p) * 0.02)
    assert len(a[0]) + len(a[1]) == len(p)


def test_corpus_files(tmp_path):
    (tmp_path / "a.txt").write_text("first passage\n\n second one \n", encoding="utf-8")
    assert read_corpus_file(str(tmp_path / "a.txt")) == ["first passage", "second one"]
    (tmp_path / "b.jsonl").write_text('{"text": "hello  world"}\n\n{"text": "again"}\n', encoding="utf-8")
    assert read_corpus_file(str(tmp_path / "b.jsonl")) == ["hello world", "again"]
    cases = {
        "missing.txt": (None, "not found"),
        "empty.txt": (b"\n  \n", "is empty"),
        "latin.txt": ("caf\xe9\n".encode("latin-1"), "not UTF-8"),
        "notext.jsonl": (b'{"body": "x"}\n', "no 'text' field"),
        "badtype.jsonl": (b'{"text": 3}\n', "not a string"),
        "broken.jsonl": (b'{"text": \n', "not JSON"),
        "data.csv": (b"a,b\n", "suffix"),
    }
    for name, (content, msg) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=msg):
            read_corpus_file(str(tmp_path / name))


def test_batch_iterator_covers_epoch_and_resumes():
    it = BatchIterator(10, 4, seed=1)
    seen = torch.cat([it.next() for _ in range(5)])  # 20 rows = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    state = it.state_dict()
    nxt = it.next()
    it2 = BatchIterator(10, 4, seed=1)
    it2.load_state_dict(state)
    assert torch.equal(it2.next(), nxt)
    shards = [BatchIterator(10, 5, seed=1, rank=r, world_size=2).next() for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


@pytest.mark.parametrize("name", ["tiny", "tiny-causal"])
def test_tiny_config_states_its_parameter_count(root, name):
    import re

    from ldlm.blocks import count_params
    from ldlm.trainer import setup_model

    path = f"{root}/configs/{name}.yaml"
    stated = int(re.search(r"([\d,]+) trainable parameters", open(path).read()).group(1).replace(",", ""))
    assert count_params(setup_model(load_config(path), torch.device("cpu"))) == stated


def test_ldlm_loss_leaves_out_the_accuracy_argmax_on_unlogged_steps(root, tmp_path):
    """The trainer marks the steps whose logs it will read; the others skip the argmax over the vocabulary,
    and the loss itself does not change."""
    import torch

    from ldlm.config import load_config
    from ldlm.data import load_corpus
    from ldlm.trainer import setup_model

    cfg = load_config(f"{root}/configs/micro.yaml", [f"data.cache_dir={tmp_path / 'cache'}"])
    model = setup_model(cfg, torch.device("cpu"))
    model.prepare(load_corpus(cfg.data, model.tokenizer, cfg.model.lm), torch.device("cpu"))
    batch = model.get_batch("train", torch.arange(4), torch.device("cpu"))
    out = {}
    for logged in (True, False):
        model.step_logs = logged
        torch.manual_seed(0)
        out[logged] = model.loss(batch, 0)
    assert 0 <= float(out[True][1]["dec_acc"]) <= 1 and "dec_acc" not in out[False][1]
    assert torch.equal(out[True][0], out[False][0])


def test_cpu_attention_under_bf16_autocast_runs_in_fp32_when_trained_and_matches_the_fp32_result(monkeypatch):
    """CPU SDPA's bf16 backward is several times slower than fp32's (bench/results/precision-step-s17/): under bf16
    autocast on CPU, attention that autograd will differentiate takes fp32 inputs, returns bf16, and equals the
    fp32 layer up to bf16 rounding; without autograd (inference) it stays bf16, where its forward is fast."""
    import torch.nn.functional as F

    import ldlm.blocks as blocks
    import ldlm.precision as precision

    torch.manual_seed(0)
    attn = blocks.Attention(64, 4)
    x = torch.randn(3, 10, 64)
    key_mask = torch.ones(3, 10, dtype=torch.bool)
    key_mask[1, 7:] = False
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(precision.F, "scaled_dot_product_attention", spy)
    ref = attn(x, key_mask=key_mask)
    assert seen == [(torch.float32,) * 3]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x, key_mask=key_mask)
        y_causal = attn(x, causal=True)
    assert seen[1:] == [(torch.float32,) * 3] * 2
    assert y.dtype == torch.bfloat16  # the products around attention stay bf16
    assert torch.allclose(y.float(), ref, atol=3e-2, rtol=3e-2)
    assert torch.allclose(y_causal.float(), attn(x, causal=True), atol=3e-2, rtol=3e-2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x, key_mask=key_mask)
    assert seen[-1] == (torch.bfloat16,) * 3
    monkeypatch.setattr(precision, "CPU_BF16_ATTENTION_IN_FP32", False)  # the switch bench/precision_step.py times
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x, key_mask=key_mask)
    assert seen[-1] == (torch.bfloat16,) * 3
