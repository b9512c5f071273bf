"""The CUDA path. Its logic runs on the CPU here (device choice, the autocast dtype, the out-of-memory
message, checkpoints moving between devices); the tests marked `cuda` need a GPU, are skipped
without one, and are what `bench/gpu_check.py` runs there (`pytest -m cuda`)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from ldlm.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "configs" / "micro.yaml")


def micro_trainer(tmp_path, device="cpu", steps=6, resume=False, *extra):
    """A micro LDLM trainer writing to tmp_path/run (batch 8, a checkpoint every 3 steps)."""
    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    over = [f"train.device={device}", f"train.steps={steps}", "train.batch_size=8", "train.save_every=3",
            "train.eval_every=0", "train.log_every=1", "train.threads=1", f"data.cache_dir={tmp_path / 'cache'}",
            *extra]
    return Trainer(load_config(MICRO, over), str(tmp_path / "run"), resume=resume, quiet=True)


def trained_state(tr) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in tr.model.trainable_state().items()}


# ---------------------------------------------------------------- on the CPU
def test_device_choice_with_and_without_a_gpu(monkeypatch):
    from ldlm.trainer import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu", 2) == torch.device("cpu")
    with pytest.raises(UserError) as e:
        pick_device("cuda")
    assert "no CUDA device" in str(e.value) and "train.device=cpu" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda", 0)
    assert pick_device("cuda", local_rank=3) == torch.device("cuda", 3)  # one GPU per torchrun process
    assert pick_device("cpu", local_rank=3) == torch.device("cpu")

    sys.path.insert(0, str(ROOT / "bench"))
    import benchlib

    assert benchlib.pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert benchlib.pick_device("auto") == "cpu"
    with pytest.raises(SystemExit, match="no CUDA device is visible; use --device cpu"):
        benchlib.pick_device("cuda")


def test_autocast_is_bf16_on_both_devices_and_off_when_not_enabled():
    from ldlm.precision import autocast

    lin, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with autocast(torch.device("cpu"), True):
        assert lin(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False):
        assert lin(x).dtype == torch.float32
    with warnings.catch_warnings():  # a CPU-only torch warns that CUDA autocast is unavailable
        warnings.simplefilter("ignore")
        ctx = autocast(torch.device("cuda", 1), True)
    # bf16, not fp16: fp16 would need a gradient scaler, which the trainer does not have
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_bf16_is_native_on_gpus_and_on_cpus_with_amx_only(monkeypatch):
    from ldlm import precision

    avx2 = frozenset({"fpu", "avx", "avx2", "fma"})  # an AVX2-only CPU (AMD EPYC Zen 3, say)
    avx512_bf16 = avx2 | {"avx512f", "avx512_bf16"}  # bf16 instructions, no AMX: bf16 measured slower than fp32
    for flags, want in ((avx2, False), (avx512_bf16, False), (avx512_bf16 | {"amx_bf16", "amx_tile"}, True)):
        monkeypatch.setattr(precision, "_cpu_flags", lambda f=flags: f)
        assert precision.native_bf16("cpu") is want and precision.native_bf16(torch.device("cpu")) is want
        assert precision.native_bf16("cuda:1") is True
    monkeypatch.setenv("LDLM_FP32", "1")  # fp32 everywhere, to reproduce an fp32 machine's numbers
    assert precision.native_bf16("cpu") is False and precision.native_bf16("cuda:1") is False


def test_cpuinfo_flags_are_read_as_words():
    from ldlm import precision

    flags = precision._cpu_flags()
    assert "avx512_bf16" not in flags or "avx512f" in flags  # one word per flag, not a substring match
    assert all(" " not in f for f in flags)


@pytest.mark.parametrize("native", [False, True])
def test_train_bf16_falls_back_to_fp32_on_a_cpu_that_emulates_bf16(tmp_path, monkeypatch, native):
    """train.bf16=true (the default) trains under bf16 autocast only where bf16 runs in hardware: an
    emulating CPU is ~50x slower in bf16 (bench/results/bf16-cpu/bf16-cpu.md). The choice is logged."""
    import json

    from ldlm import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "native_bf16", lambda device: native)
    tr = micro_trainer(tmp_path, "cpu", 1, False, "train.bf16=true")
    seen = []
    real = tr.fwd

    def fwd(batch, step):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(batch, step)

    tr.fwd = fwd
    tr.train()
    assert tr.bf16 is native and seen == [native]
    start = next(json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
                 if '"start"' in x)
    assert start["event"] == "start" and start["bf16"] is native


def test_the_feature_pass_uses_bf16_only_where_it_is_native(monkeypatch):
    from ldlm import features

    class LM:  # stands in for FrozenLM: records whether autocast was on
        hidden = 4
        seen: list = []

        def raw_features(self, x, m):
            self.seen.append(torch.is_autocast_enabled("cpu"))
            return torch.zeros(*x.shape, 4)

    ids, mask = torch.zeros(5, 3, dtype=torch.long), torch.ones(5, 3, dtype=torch.bool)
    for native in (False, True):
        monkeypatch.setattr(features, "native_bf16", lambda device, n=native: n)
        LM.seen = []
        out = features.compute_features(LM(), ids, mask, batch_size=2)
        assert out.shape == (5, 3, 4) and out.dtype == torch.float16 and LM.seen == [native] * 3


def test_out_of_memory_is_one_line_naming_the_fix(tmp_path):
    """A CUDA out-of-memory error (multi-line, simulated) in the second micro-batch; on a GPU the message
    says CUDA (test_a_real_cuda_out_of_memory_gives_the_one_line_message)."""
    tr = micro_trainer(tmp_path, "cpu", 6, False, "train.grad_accum=2")
    calls = []

    def fwd(batch, step):
        calls.append(step)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                                         "capacity of 139.72 GiB of which 1.2 GiB is free.\nOf the allocated ...")
        return real(batch, step)

    real, tr.fwd = tr.fwd, fwd
    with pytest.raises(UserError) as e:
        tr._step()
    msg = str(e.value)
    assert msg == ("out of CPU memory at step 0 with train.batch_size=8 sequences of 32 tokens per process "
                   "(grad_accum=2); lower train.batch_size and raise train.grad_accum to keep the global batch")
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback


def test_checkpoint_written_on_a_gpu_resumes_and_loads_on_the_cpu(tmp_path):
    from safetensors.torch import load_file, save_file

    from ldlm.generate import load_model

    micro_trainer(tmp_path, steps=3).train()
    ckpt = tmp_path / "run" / "ckpt-000003"
    # what a GPU run adds to a checkpoint: the CUDA generator's state (seed and offset, 16 bytes)
    tt = load_file(str(ckpt / "train.safetensors"))
    tt["rng.cuda"] = torch.arange(16, dtype=torch.uint8)
    save_file(tt, str(ckpt / "train.safetensors"))
    saved = {k: v for k, v in load_file(str(ckpt / "model.safetensors")).items()}

    tr = micro_trainer(tmp_path, "cpu", 6, True)
    assert tr.step == 3 and tr.device == torch.device("cpu")
    state = tr.model.trainable_state()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert all(v.device.type == "cpu" for v in tr.ema.params.values())
    assert all(t.device.type == "cpu" for st in tr.opt.state.values() for t in st.values() if torch.is_tensor(t))
    tr.train()
    assert tr.step == 6 and all(torch.isfinite(p).all() for p in tr.model.parameters())
    model = load_model(tmp_path / "run", device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}


# ---------------------------------------------------------------- on a GPU (pytest -m cuda)
@pytest.mark.cuda
def test_trainer_puts_model_batches_and_training_state_on_the_gpu(tmp_path):
    tr = micro_trainer(tmp_path, "auto", 2)
    assert tr.device == torch.device("cuda", 0)
    assert all(p.is_cuda for p in tr.model.parameters()) and all(b.is_cuda for b in tr.model.buffers())
    batch = tr.model.get_batch("train", torch.arange(4), tr.device)
    assert all(v.is_cuda for v in batch.values())
    tr.train()
    assert all(v.is_cuda for v in tr.ema.params.values())
    moments = [t for st in tr.opt.state.values() for t in st.values() if torch.is_tensor(t) and t.dim() > 0]
    assert moments and all(t.is_cuda for t in moments)


@pytest.mark.cuda
def test_autocast_on_the_gpu_computes_in_bf16_and_the_loss_is_fp32_and_finite(tmp_path):
    from ldlm.trainer import autocast

    tr = micro_trainer(tmp_path, "cuda")
    m, dev = tr.model, tr.device
    z = torch.randn(4, m.cfg.model.latent_len, m.cfg.model.latent_dim, device=dev)
    t = torch.rand(4, device=dev)
    with autocast(dev, True):
        assert m.denoiser(z, t).dtype == torch.bfloat16
        loss, logs = m(m.get_batch("train", torch.arange(8), dev), 0)
    with autocast(dev, False):
        assert m.denoiser(z, t).dtype == torch.float32
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.requires_grad


@pytest.mark.cuda
def test_a_real_cuda_out_of_memory_gives_the_one_line_message(tmp_path):
    tr = micro_trainer(tmp_path, "cuda")

    def loss(batch, step):
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # 1 PiB: more than any GPU has
        raise AssertionError("allocated 1 PiB")

    tr.model.loss = loss
    with pytest.raises(UserError) as e:
        tr.train()
    msg = str(e.value)
    assert msg.startswith("out of CUDA memory at step 0 with train.batch_size=8") and "\n" not in msg
    torch.cuda.empty_cache()


@pytest.mark.cuda
def test_checkpoint_moves_gpu_to_cpu_to_gpu_bit_for_bit(tmp_path):
    from ldlm.generate import load_model

    a = micro_trainer(tmp_path, "cuda", 3)
    a.train()
    w3 = trained_state(a)
    b = micro_trainer(tmp_path, "cpu", 6, True)
    assert b.step == 3 and b.device.type == "cpu"
    assert all(torch.equal(v, w3[k]) for k, v in trained_state(b).items())
    b.train()
    w6 = trained_state(b)
    c = micro_trainer(tmp_path, "cuda", 9, True)
    assert c.step == 6 and c.device.type == "cuda"
    assert all(torch.equal(v, w6[k]) for k, v in trained_state(c).items())
    assert all(v.is_cuda for v in c.ema.params.values())
    c.train()
    assert c.step == 9 and all(torch.isfinite(p).all() for p in c.model.parameters())
    on_cpu, on_gpu = load_model(tmp_path / "run", "cpu"), load_model(tmp_path / "run", "cuda")
    for (k, p), (k2, q) in zip(on_cpu.named_parameters(), on_gpu.named_parameters()):
        assert k == k2 and q.is_cuda and torch.equal(p, q.cpu())


@pytest.mark.cuda
def test_fp32_sampling_agrees_across_devices(tmp_path):
    from ldlm.generate import load_model, sample_settings
    from ldlm.sampling import reverse_diffusion

    micro_trainer(tmp_path, "cuda", 6).train()
    cpu, gpu = load_model(tmp_path / "run", "cpu"), load_model(tmp_path / "run", "cuda")
    sc = sample_settings(cpu, num=16, steps=10)
    shape = (16, cpu.cfg.model.latent_len, cpu.cfg.model.latent_dim)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 on the GPU too
    try:
        z = {name: reverse_diffusion(m.denoiser, m.schedule, shape, 10, "sde", 1.0, torch.Generator().manual_seed(0),
                                     dev).cpu() for name, m, dev in (("cpu", cpu, "cpu"), ("gpu", gpu, "cuda"))}
        ids_cpu = cpu.generate_ids(16, sc, torch.Generator().manual_seed(1), "cpu")
        ids_gpu = gpu.generate_ids(16, sc, torch.Generator().manual_seed(1), "cuda").cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    # the noise comes from the same CPU generator, so the two runs differ only by rounding
    assert torch.allclose(z["gpu"], z["cpu"], rtol=1e-3, atol=1e-3), (z["gpu"] - z["cpu"]).abs().max()
    assert (ids_cpu == ids_gpu).float().mean() >= 0.98
