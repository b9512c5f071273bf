"""Run folders you can trust: resume honours or refuses, one writer per run, full disks, the shared
feature cache, EMA of buffers, corpora too small to train on, and config keys that apply to the chosen algorithm."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldlm import checkpoint as ck
from ldlm.cli import main
from ldlm.config import _CHOICES, ONLY_FOR, Config, load_config
from ldlm.errors import UserError
from test_resume import losses as step_logs  # the training lines of metrics.jsonl by step, minus timings

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "configs" / "micro.yaml")
ENV = {**os.environ, "LDLM_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def fast(cache: Path, steps: int = 4) -> list[str]:
    return [f"train.steps={steps}", "train.batch_size=8", "train.log_every=1", "train.save_every=2",
            "train.eval_every=0", "train.threads=1", f"data.cache_dir={cache}"]


def hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def refused(argv, capsys, fragment: str) -> str:
    rc, err = cli(argv, capsys)
    assert rc == 2, (rc, err)
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and fragment in last, err
    return last


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run4(tmp_path_factory, cache) -> Path:
    """A micro run of 4 steps (checkpoints at 2 and 4) to copy."""
    os.environ["LDLM_QUIET"] = "1"
    out = tmp_path_factory.mktemp("run4") / "run"
    assert main(["train", "--config", MICRO, "--out", str(out), "--quiet", *fast(cache)]) == 0
    return out


@pytest.fixture
def run(run4, tmp_path) -> Path:
    shutil.copytree(run4, tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------- 1. resume honours or refuses
def test_resume_on_a_folder_without_checkpoint_writes_nothing(tmp_path, cache, capsys):
    missing = tmp_path / "typo"
    refused(["train", "--out", str(missing), "--resume"], capsys, f"run folder '{missing}' does not exist")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["train", "--out", str(empty), "--resume", *fast(cache)], capsys, "holds no checkpoint")
    assert list(empty.iterdir()) == []
    # with --config it starts a new run there, and says so
    rc, err = cli(["train", "--config", MICRO, "--out", str(empty), "--resume", "--quiet", *fast(cache, 2)], capsys)
    assert rc == 0 and f"no checkpoint in '{empty}': starting a new run from {MICRO}" in err
    assert (empty / "latest").read_text().strip() == "ckpt-000002"


@pytest.mark.parametrize("args, fragment", [
    (["--config", str(ROOT / "configs" / "tiny.yaml")], "data.seq_len is 32 in the run, 48 now"),
    (["--data", "other.txt"], "data.corpus is 'shakespeare' in the run, 'other.txt' now"),
    (["model.latent_dim=32"], "model.latent_dim is 16 in the run, 32 now"),
    (["train.lr=0.01"], "train.lr is 0.001 in the run, 0.01 now"),
    (["recipe=naive"], "recipe.decoder_loss is 'mse+ce' in the run, 'ce' now"),
    (["train.schedule_steps=100"], "train.schedule_steps is 4 in the run, 100 now"),
    (["train.steps=3"], "train.steps=3 is below step 4"),
])
def test_resume_refuses_what_it_cannot_honour(run, args, fragment, capsys):
    before = hashes(run)
    err = refused(["train", "--out", str(run), "--resume", "--quiet", *args], capsys, fragment)
    if "below" not in fragment:
        assert "a run may change only train.steps" in err and "another --out" in err
    assert hashes(run) == before


def test_resume_with_its_own_config_and_safe_overrides(run, cache, capsys):
    # the same --config as the run (plus keys that are safe to change) is accepted
    rc, err = cli(["train", "--config", MICRO, "--out", str(run), "--resume", "--quiet", *fast(cache, 6),
                   "train.eval_every=3", "train.keep_last=3", "sample.num=3"], capsys)
    assert rc == 0, err
    assert (run / "latest").read_text().strip() == "ckpt-000006"
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["eval_every"] == 3 and saved["sample"]["num"] == 3
    assert saved["train"]["schedule_steps"] == 4  # the horizon of the original run


def test_resume_refuses_a_changed_corpus_file(tmp_path, cache, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"passage number {i} of a small corpus\n" for i in range(60)))
    out = tmp_path / "run"
    common = ["--quiet", "train.steps=2", "train.batch_size=4", "train.eval_every=0", "train.threads=1",
              f"data.cache_dir={cache}"]
    assert main(["train", "--config", MICRO, "--data", str(corpus), "--out", str(out), *common]) == 0
    corpus.write_text("".join(f"another text, line {i}\n" for i in range(60)))
    before = hashes(out)
    refused(["train", "--out", str(out), "--resume", "train.steps=4", "--quiet"], capsys,
            "is not the one this run was trained on")
    assert hashes(out) == before


def test_lr_schedule_keeps_its_horizon():
    from ldlm.trainer import lr_at

    tc = Config().train
    tc.steps, tc.lr, tc.lr_warmup, tc.min_lr_frac = 500, 1.0, 10, 0.1
    before = [lr_at(s, tc) for s in range(500)]
    tc.steps, tc.schedule_steps = 1000, 500  # extended on resume: the horizon stays
    after = [lr_at(s, tc) for s in range(1000)]
    assert after[:500] == before
    assert after[499] - after[500] >= 0 and all(x == pytest.approx(0.1, abs=1e-12) for x in after[500:])
    tc.schedule_steps = 0  # what extending used to do: the cosine is stretched and the LR jumps up
    assert lr_at(500, tc) > 5 * before[499]


def test_extending_a_run_equals_a_run_with_that_horizon(tmp_path, cache, capsys):
    """`--resume train.steps=8` on a 4-step run continues the 4-step schedule (LR at its floor, the
    two-stage boundary at step 2) and is bit for bit the run `train.steps=8 train.schedule_steps=4`."""
    common = [*fast(cache), "train.lr_warmup=1", "recipe.two_stage=0.5", "train.bf16=false"]
    ext, ref = tmp_path / "ext", tmp_path / "ref"
    assert main(["train", "--config", MICRO, "--out", str(ext), "--quiet", *common]) == 0
    assert main(["train", "--out", str(ext), "--resume", "--quiet", "train.steps=8"]) == 0
    assert main(["train", "--config", MICRO, "--out", str(ref), "--quiet", *common, "train.steps=8",
                 "train.schedule_steps=4"]) == 0
    a, b = step_logs(ext), step_logs(ref)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for s in a:
        assert a[s] == b[s], s
    floor = 0.1 * 1e-3
    assert [a[s]["lr"] for s in range(5, 9)] == [pytest.approx(floor, rel=1e-12)] * 4
    assert a[5]["lr"] <= a[4]["lr"]  # no jump
    assert [a[s].get("stage") for s in range(1, 9)] == [1, 1] + [2] * 6
    cfg = json.loads((ext / "config.json").read_text())["train"]
    assert (cfg["steps"], cfg["schedule_steps"]) == (8, 4)


# ---------------------------------------------------------------- 2. one writer
def _holder(folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom ldlm.runlock import RunLock\nlock = RunLock(sys.argv[1]).acquire()\n"
            "print('held', flush=True)\ntime.sleep(300)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_one_writer_per_run_and_stale_lock_takeover(run, cache, capsys):
    holder = _holder(run)
    try:
        before = hashes(run)
        err = refused(["train", "--out", str(run), "--resume", "--quiet", *fast(cache, 6)], capsys,
                      "is being written by another trainer")
        assert f"pid {holder.pid} on host " in err and "writer.lock" in err
        assert hashes(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder left its lock file: the next trainer takes it over and says so
    assert json.loads((run / "writer.lock").read_text())["pid"] == holder.pid
    rc, err = cli(["train", "--out", str(run), "--resume", "--quiet", *fast(cache, 6)], capsys)
    assert rc == 0, err
    assert f"took over the lock of '{run}' from pid {holder.pid}" in err
    assert (run / "latest").read_text().strip() == "ckpt-000006"
    assert not (run / "writer.lock").exists()  # released at the end


def test_lock_held_in_process_refuses_a_second_trainer(tmp_path, cache):
    from ldlm.trainer import Trainer

    cfg = load_config(MICRO, fast(cache, 2))
    first = Trainer(cfg, str(tmp_path / "run"), quiet=True)
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        Trainer(load_config(MICRO, fast(cache, 2)), str(tmp_path / "run"), quiet=True)
    first.train()
    assert not (tmp_path / "run" / "writer.lock").exists()


# ---------------------------------------------------------------- 3. full disk
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_failed_checkpoint_write_keeps_the_previous_one_and_resume_is_exact(tmp_path, cache, monkeypatch, err):
    from safetensors import SafetensorError

    from ldlm.generate import load_model
    from ldlm.trainer import Trainer

    ov = fast(cache, 6)
    Trainer(load_config(MICRO, ov), str(tmp_path / "ref"), quiet=True).train()
    run = tmp_path / "run"
    real, seen = ck.save_file, {}

    def failing(tensors, filename):
        if "ckpt-000004" in filename:  # half the file is written, then the disk is full
            seen.setdefault("before", hashes(run / "ckpt-000002"))
            real(tensors, filename)
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            # what safetensors raises for a failed write (its I/O errors are not OSErrors)
            raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(err)} (os error {err})")
        real(tensors, filename)

    monkeypatch.setattr(ck, "save_file", failing)
    with pytest.raises(UserError) as e:
        Trainer(load_config(MICRO, ov), str(run), quiet=True).train()
    msg = str(e.value)
    assert "\n" not in msg and f"cannot write checkpoint ckpt-000004 in '{run}' ({os.strerror(err)}" in msg
    assert re.search(r"it needs about 9\.\d MB, [\d,.]+ MB free", msg), msg
    assert "the previous checkpoint ckpt-000002 and 'latest' are intact" in msg and "--resume" in msg
    assert (run / "latest").read_text().strip() == "ckpt-000002"
    assert hashes(run / "ckpt-000002") == seen["before"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith((".", "ckpt"))) == ["ckpt-000002"]
    load_model(run, device="cpu")
    monkeypatch.setattr(ck, "save_file", real)  # space again
    Trainer(load_config(MICRO, ov), str(run), resume=True, quiet=True).train()
    assert step_logs(run) == step_logs(tmp_path / "ref")


def test_full_disk_while_logging_stops_with_one_line(tmp_path, cache):
    from ldlm.trainer import Trainer

    tr = Trainer(load_config(MICRO, fast(cache, 6)), str(tmp_path / "run"), quiet=True)
    real = tr.log

    def log(record):
        if record.get("step") == 3 and "loss" in record:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "metrics.jsonl"))
        real(record)

    tr.log = log
    with pytest.raises(UserError) as e:
        tr.train()
    assert str(e.value).startswith(f"cannot write 'metrics.jsonl' in '{tmp_path / 'run'}' (No space left on device; ")
    assert "the previous checkpoint ckpt-000002 and 'latest' are intact" in str(e.value)
    assert not (tmp_path / "run" / "writer.lock").exists()


def test_full_cache_disk_costs_speed_not_the_run(tmp_path, monkeypatch, capsys):
    from ldlm import features as F
    from ldlm.frozen_lm import FrozenLM, load_tokenizer

    monkeypatch.delenv("LDLM_QUIET")
    enc = load_tokenizer("minilm")(["a short passage", "and another one"], padding="max_length", max_length=8,
                                   return_tensors="pt")
    lm = FrozenLM("minilm")

    def full(tensors, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(F, "save_tensors", full)
    store = F.cached_features(lm, enc["input_ids"], enc["attention_mask"].bool(), tmp_path, "k")
    assert store.held.all() and store.get(torch.arange(2)).shape == (2, 8, lm.hidden)
    assert "cannot cache features" in capsys.readouterr().err
    assert not list((tmp_path / "features").rglob("*safetensors*"))


def _can_mount_tmpfs(d: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    d.mkdir(exist_ok=True)
    p = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{d}'"],
                       capture_output=True)
    return p.returncode == 0


def test_full_tmpfs_during_checkpoint_then_resume_with_space(tmp_path, cache):
    """A real full disk: the run folder is a 14 MB tmpfs (a micro checkpoint is ~9.2 MB), so the second
    checkpoint cannot be written; then the tmpfs grows and `--resume` finishes the run exactly."""
    if not _can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("no tmpfs mounts here (unshare -rm refused); the injected-failure test covers this")
    ov = [*fast(cache, 6), "train.keep_last=1"]
    assert main(["train", "--config", MICRO, "--out", str(tmp_path / "ref"), "--quiet", *ov]) == 0
    run, keep = tmp_path / "run", tmp_path / "keep"
    run.mkdir()
    keep.mkdir()
    py = f"'{sys.executable}' -m ldlm train --quiet"
    script = f"""
mount -t tmpfs -o size=14m tmpfs '{run}' || exit 99
{py} --config '{MICRO}' --out '{run}' {' '.join(ov)} 2> '{keep}/err1'; echo $? > '{keep}/rc1'
cat '{run}/latest' > '{keep}/latest1'; ls -a '{run}' > '{keep}/ls1'
mount -o remount,size=64m '{run}'
{py} --out '{run}' --resume 2> '{keep}/err2'; echo $? > '{keep}/rc2'
cp '{run}/metrics.jsonl' '{run}/latest' '{keep}/'
"""
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    err1 = (keep / "err1").read_text().strip()
    assert (keep / "rc1").read_text().strip() == "2", err1
    assert err1.startswith("error: cannot write checkpoint ckpt-000004") and "No space left on device" in err1
    assert "the previous checkpoint ckpt-000002 and 'latest' are intact" in err1 and "\n" not in err1
    assert (keep / "latest1").read_text().strip() == "ckpt-000002"
    assert not [n for n in (keep / "ls1").read_text().split() if "tmp" in n or n == "ckpt-000004"]
    assert (keep / "rc2").read_text().strip() == "0", (keep / "err2").read_text()
    assert (keep / "latest").read_text().strip() == "ckpt-000006"
    assert step_logs(keep) == step_logs(tmp_path / "ref")


# ---------------------------------------------------------------- 4. the feature cache
def test_cache_root(monkeypatch, tmp_path):
    from ldlm.cache import cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "ldlm"
    assert cache_root(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "ldlm"
    assert Config().data.cache_dir == ""


FEATURES = r"""
import json, sys
import ldlm.features as F
from ldlm.config import load_config
from ldlm.data import build_corpus
from ldlm.frozen_lm import FrozenLM, load_tokenizer
calls, real = [], F.compute_features
def counting(lm, ids, *a, **k):
    calls.append(int(ids.shape[0]))
    return real(lm, ids, *a, **k)
F.compute_features = counting
cfg = load_config(sys.argv[1], sys.argv[2:])
corpus = build_corpus(cfg.data, load_tokenizer("minilm"), "minilm")
cf = F.CorpusFeatures(FrozenLM("minilm"), corpus, cfg.data, "cpu")
print(json.dumps({"calls": calls, "sums": {k: float(v.get(v.rows()).double().sum()) for k, v in cf.stores.items()}}))
"""


def _features(cwd: Path, *overrides: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FEATURES, MICRO, "data.max_passages=120", *overrides],
                            cwd=cwd, env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_feature_cache_is_shared_across_directories_and_processes(tmp_path):
    """Two processes started at once from different directories, with no data.cache_dir: the features
    are computed once (the second waits for the first), land under $XDG_CACHE_HOME/ldlm, and a later
    run from a third directory reads them without computing."""
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    dirs = [tmp_path / n for n in ("a", "b", "c")]
    for d in dirs:
        d.mkdir()
    procs = [_features(d, env=xdg) for d in dirs[:2]]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out.splitlines()[-1]))
    assert sorted(c for o in outs for c in o["calls"]) == [12, 108]  # valid and train split, each once
    assert outs[0]["sums"] == outs[1]["sums"]
    parts = sorted((tmp_path / "xdg" / "ldlm" / "features").glob("*/part-*.safetensors"))
    assert [p.name for p in parts] == ["part-00000.safetensors"] * 2 and not list((tmp_path / "xdg").rglob("*.tmp*"))
    assert not any((d / "cache").exists() for d in dirs)
    p = _features(dirs[2], env=xdg)
    third = json.loads(p.communicate(timeout=300)[0].splitlines()[-1])
    assert third == {"calls": [], "sums": outs[0]["sums"]}
    # another corpus is another entry
    p = _features(dirs[2], "data.max_passages=60", env=xdg)
    assert sorted(json.loads(p.communicate(timeout=300)[0].splitlines()[-1])["calls"]) == [6, 54]


def test_feature_key_follows_corpus_lm_and_layer():
    from ldlm import features as F
    from ldlm.frozen_lm import FrozenLM

    lm = FrozenLM("minilm")
    h = F.lm_fingerprint(lm)
    assert F.lm_fingerprint(FrozenLM("minilm")) == h  # the same LM loaded again
    ids = torch.randint(0, 1000, (5, 8))
    mask = torch.ones(5, 8, dtype=torch.bool)
    k = F.feature_key(h, -1, ids, mask)
    assert F.feature_key(h, -1, ids.clone(), mask.clone()) == k
    ids2 = ids.clone()
    ids2[3, 4] += 1
    assert F.feature_key(h, -1, ids2, mask) != k
    assert F.feature_key(h, -3, ids, mask) != k  # model.lm_layer
    assert F.feature_key(h, -1, ids, mask, compute="bf16") != k  # features the LM computed under bf16 autocast
    with torch.no_grad():
        lm.lm.encoder.layer[2].attention.self.query.weight[0, 0] += 1.0  # a fine-tuned LM, same name
    h2 = F.lm_fingerprint(lm)
    assert h2 != h and F.feature_key(h2, -1, ids, mask) != k


def test_only_the_rows_a_run_reads_are_computed_and_the_rest_on_demand(tmp_path, monkeypatch):
    """CorpusFeatures(rows=...) computes the named rows only (and the normalisation sample: the first rows of the
    run's draw order), caches them with a `done` mask, adds rows another run names to the same entry, and computes an unnamed row when it is read,
    equal to what the full pass gives."""
    import ldlm.features as F
    from ldlm.config import load_config
    from ldlm.data import build_corpus
    from ldlm.frozen_lm import FrozenLM, load_tokenizer

    cfg = load_config(MICRO, ["data.max_passages=120", f"data.cache_dir={tmp_path / 'part'}"])
    corpus, lm = build_corpus(cfg.data, load_tokenizer("minilm"), "minilm"), FrozenLM("minilm")
    n = len(corpus.train)
    full = F.CorpusFeatures(lm, corpus, load_config(MICRO, ["data.max_passages=120",
                                                             f"data.cache_dir={tmp_path / 'full'}"]).data, "cpu")
    calls, real = [], F.compute_features

    def counting(lm_, ids, *a, **k):
        calls.append(int(ids.shape[0]))
        return real(lm_, ids, *a, **k)

    monkeypatch.setattr(F, "compute_features", counting)
    monkeypatch.setattr(F, "NORM_ROWS", 2)
    order = torch.tensor([11, 3, 10, 40, 41])  # the run's draw order: the normalisation is fitted on 11 and 3
    cf = F.CorpusFeatures(lm, corpus, cfg.data, "cpu", {"train": torch.tensor([10, 11, 3]), "valid": None,
                                                        "train_order": order})
    assert sorted(calls) == [3, len(corpus.valid)]  # rows 3, 10 and 11 (the sample among them); all of valid
    st = cf.stores["train"]
    assert st.rows().tolist() == [3, 10, 11]
    assert st.data.shape[0] == 3 < n  # memory holds the rows computed, not the split
    sample, sample_mask = cf.normalisation_sample(corpus, "cpu")
    assert torch.equal(sample, st.get(torch.tensor([3, 11])).float()) and torch.equal(sample_mask, corpus.train.mask[[3, 11]])
    assert torch.allclose(st.get(st.rows()).float(), full.stores["train"].get(st.rows()).float(), atol=2e-2)
    entry = next(p.parent for p in (tmp_path / "part" / "features").glob("*/part-00000.safetensors")
                 if torch.equal(F.load_part_rows(p), torch.tensor([3, 10, 11])))
    first_part = (entry / "part-00000.safetensors").read_bytes()
    calls.clear()
    loads, real_load = [], F._load
    monkeypatch.setattr(F, "_load", lambda *a: loads.append(1) or real_load(*a))
    again = F.CorpusFeatures(lm, corpus, cfg.data, "cpu", {"train": torch.tensor([11, 20]), "valid": None})
    assert calls == [3]  # rows 20, 0 and 1: the rest is in the entry
    assert len(loads) == 2  # each split's stored features read once, rows to add or not
    assert again.stores["train"].rows().tolist() == [0, 1, 3, 10, 11, 20]  # + no order: rows 0, 1
    # the new rows are a new part; the first one is not rewritten
    assert sorted(p.name for p in entry.glob("part-*")) == ["part-00000.safetensors", "part-00001.safetensors"]
    assert (entry / "part-00000.safetensors").read_bytes() == first_part
    assert F.load_part_rows(entry / "part-00001.safetensors").tolist() == [0, 1, 20]
    assert torch.equal(again.norm_rows, torch.tensor([0, 1]))  # not what the entry holds
    idx = torch.tensor([20, 30, n - 1])  # 30 and n-1 were never named: computed when read
    ids, mask = corpus.train.ids[idx], corpus.train.mask[idx]
    with torch.no_grad():
        got = again.raw("train", idx, ids, mask)
    assert torch.allclose(got, full.raw("train", idx, ids, mask), atol=2e-2)
    assert again.stores["train"].held[idx].all()
    twice = torch.tensor([31, 31, 3])  # a row named twice in one batch is computed and held once
    got = again.raw("train", twice, corpus.train.ids[twice], corpus.train.mask[twice])
    assert torch.equal(got[0], got[1]) and again.stores["train"].count == 9


def test_the_feature_pass_skips_padding_only_where_the_model_never_reads_it():
    """`pad_zero`: rows run in order of length, each batch cut to its longest row, padding positions zero; real
    positions as the full pass gives them, each row where it was. LDLM asks for it unless a bidirectional token
    decoder reads padding positions (and TEncDM, whose latents are every position's states): with it, the
    training loss is the same whatever the padding positions hold; without it, it is not."""
    import ldlm.features as F
    from ldlm.algorithms import build
    from ldlm.data import build_corpus
    from ldlm.frozen_lm import FrozenLM, load_tokenizer

    tok = load_tokenizer("minilm")
    cfg = load_config(MICRO, ["data.max_passages=120"])
    corpus, lm = build_corpus(cfg.data, tok, "minilm"), FrozenLM("minilm")
    ids, mask = corpus.train.ids[:40], corpus.train.mask[:40]
    L = ids.shape[1]
    assert mask.sum(1).unique().numel() > 5 and not mask.all()  # rows of many lengths, some padded
    widths, real = [], lm.raw_features
    lm.raw_features = lambda x, m: widths.append(x.shape[1]) or real(x, m)
    full = F.compute_features(lm, ids, mask, batch_size=8).float()
    assert widths == [L] * 5
    widths.clear()
    cut = F.compute_features(lm, ids, mask, batch_size=8, pad_zero=True).float()
    assert len(widths) == 5 and min(widths) < max(widths) <= L
    assert torch.allclose(cut[mask], full[mask], atol=1e-2) and (cut[~mask] == 0).all() and (full[~mask] != 0).any()
    h = F.feature_key("lm", -1, ids, mask)
    assert F.feature_key("lm", -1, ids, mask, pad_zero=False) == h != F.feature_key("lm", -1, ids, mask, pad_zero=True)

    batch = {"ids": ids[:8], "mask": mask[:8], "h": torch.randn(8, L, lm.hidden, generator=torch.Generator().manual_seed(0))}
    other = {**batch, "h": torch.where(batch["mask"].unsqueeze(-1), batch["h"], torch.randn(batch["h"].shape))}
    for overrides, reads in (([], False), (["model.tok_dec_layers=1", "model.tok_dec_causal=true"], False),
                             (["model.tok_dec_layers=1"], True)):
        torch.manual_seed(0)
        model = build(load_config(MICRO, overrides), tok)
        assert model.reads_padding_states() == reads
        if model.tok_decoder.layers:  # its output layer starts at zero (the identity): make the blocks count
            torch.nn.init.normal_(model.tok_decoder.out[1].weight, std=0.1)
        losses = []
        for b in (batch, other):
            torch.manual_seed(1)
            losses.append(model.loss(b, model.schedule_steps())[0].item())
        assert (losses[0] != losses[1]) == reads, (overrides, losses)
    assert build(load_config(str(ROOT / "configs" / "micro-tencdm.yaml")), tok).reads_padding_states()


def test_validation_batches_and_the_rows_a_run_draws():
    from ldlm.data import BatchIterator
    from ldlm.trainer import validation_batches

    assert [b.tolist() for b in validation_batches(10, 4, 8)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.tolist() for b in validation_batches(100, 4, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    it = BatchIterator(50, 8, seed=3)
    it.next()
    before = it.state_dict()
    ahead = it.rows_within(4)
    assert it.state_dict() == before  # not moved
    assert ahead.tolist() == sorted(set(torch.cat([it.next() for _ in range(4)]).tolist()))
    assert BatchIterator(50, 8, seed=3).rows_within(13).tolist() == list(range(50))
    # the first epoch's order, wherever the iterator stands: what the first batches draw
    fresh = BatchIterator(50, 8, seed=3)
    assert torch.equal(it.first_epoch(), torch.cat([fresh.next() for _ in range(6)] + [fresh.next()[:2]]))


def test_corrupted_cache_entry_is_rebuilt(tmp_path):
    from ldlm import features as F
    from ldlm.frozen_lm import FrozenLM, load_tokenizer

    tok, lm = load_tokenizer("minilm"), FrozenLM("minilm")
    enc = tok(["a short passage", "and another one"], padding="max_length", max_length=8, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    rows = torch.arange(2)
    first = F.cached_features(lm, ids, mask, tmp_path, "k").get(rows)
    part = tmp_path / "features" / "k" / "part-00000.safetensors"
    for bad in (b"garbage", part.read_bytes()[: part.stat().st_size // 2]):  # not safetensors; cut short
        part.write_bytes(bad)
        again = F.cached_features(lm, ids, mask, tmp_path, "k")
        assert torch.equal(again.get(rows), first)
        assert torch.equal(F.cached_features(lm, ids, mask, tmp_path, "k").get(rows), first)
        assert [p.name for p in part.parent.glob("part-*")] == [part.name]  # the bad part replaced, nothing else


def test_cache_list_and_clear(tmp_path, capsys):
    from ldlm.cache import building

    root = tmp_path / "c"
    (root / "features").mkdir(parents=True)
    for key, split in (("aaa", "train"), ("bbb", "valid")):
        (root / "features" / f"{key}.safetensors").write_bytes(b"x" * 1000)
        (root / "features" / f"{key}.json").write_text(json.dumps({"lm": "minilm", "split": split, "rows": 3}))
    (root / "features" / "ccc").mkdir()  # an entry of parts (the format since session 16)
    (root / "features" / "ccc" / "part-00000.safetensors").write_bytes(b"y" * 500)
    (root / "features" / "ccc" / "meta.json").write_text(json.dumps({"lm": "minilm", "split": "valid", "rows": 9}))
    (root / "tokens-123").mkdir()
    (root / "tokens-123" / "meta.json").write_text(json.dumps({"format": "owt", "rows": {"train": 2}}))
    assert main(["cache", "list", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "aaa.safetensors" in out and "train split" in out and "tokens-123" in out and "4 entries" in out
    assert "ccc  minilm layer ?, valid split of ?: 9 x ? x ?" in out
    with building(root / "features" / "bbb.safetensors"):  # being built by another process: kept
        assert main(["cache", "clear", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "removed 3 entries" in out and "kept 1 being built now: bbb.safetensors" in out
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["bbb.json", "bbb.safetensors",
                                                                       "bbb.safetensors.lock"]
    assert main(["cache", "clear", "--dir", str(root)]) == 0
    assert not any(p.is_file() for p in root.rglob("*"))


# ---------------------------------------------------------------- 5. EMA of buffers
def test_ema_covers_batchnorm_statistics(tmp_path, cache):
    from ldlm.generate import load_model
    from ldlm.trainer import Trainer

    tr = Trainer(load_config(MICRO, [*fast(cache, 3), "train.ema=0.5"]), str(tmp_path / "run"), quiet=True)
    bn, name = tr.model.encoder.norm.bn, "encoder.norm.bn.running_mean"
    expected = bn.running_mean.clone()
    tr.wrapped.train()
    for _ in range(3):
        tr._step()
        tr.step += 1
        expected = 0.5 * expected + 0.5 * bn.running_mean
    assert torch.allclose(tr.ema.buffers[name], expected, rtol=1e-6, atol=1e-7)
    raw = bn.running_mean.clone()
    assert not torch.allclose(raw, expected)
    seen, real = {}, tr.model.evaluate

    def spy(batch, g):
        seen["mean"], seen["var"] = bn.running_mean.clone(), bn.running_var.clone()
        return real(batch, g)

    tr.model.evaluate = spy
    tr.validate()  # validation runs the EMA weights with the EMA statistics, then restores the raw ones
    assert torch.equal(seen["mean"], tr.ema.buffers[name])
    assert torch.equal(seen["var"], tr.ema.buffers["encoder.norm.bn.running_var"])
    assert torch.equal(bn.running_mean, raw)
    tr.save()
    tr.lock.release()
    model = load_model(tmp_path / "run", device="cpu")  # sampling uses them too
    assert torch.equal(model.encoder.norm.bn.running_mean, tr.ema.buffers[name])
    again = Trainer(load_config(MICRO, [*fast(cache, 3), "train.ema=0.5"]), str(tmp_path / "run"), resume=True,
                    quiet=True)
    assert all(torch.equal(again.ema.buffers[k], v) for k, v in tr.ema.buffers.items())
    # a checkpoint from before buffers were averaged still loads (with the raw statistics)
    ckpt = tmp_path / "run" / "ckpt-000003"
    from safetensors.torch import load_file, save_file

    old = {k: v for k, v in load_file(str(ckpt / "ema.safetensors")).items() if k not in tr.ema.buffers}
    save_file(old, str(ckpt / "ema.safetensors"))
    assert torch.equal(load_model(ckpt, device="cpu").encoder.norm.bn.running_mean, raw)


# ---------------------------------------------------------------- 6. corpora too small to train on
def lines(path: Path, n: int) -> Path:
    path.write_text("".join(f"passage number {i} of a small corpus\n" for i in range(n)))
    return path


@pytest.mark.parametrize("global_batch, eval_batch, fraction", [(16, 16, 0.1), (64, 64, 0.02), (8, 4, 0.3),
                                                                (32, 16, 0.05), (3, 15, 0.1)])
def test_min_passages_is_the_smallest_corpus_whose_split_fits(global_batch, eval_batch, fraction):
    from ldlm.data import min_passages, split_passages

    def fits(k: int) -> bool:
        train, valid = split_passages([str(i) for i in range(k)], fraction)
        return len(train) >= global_batch and len(valid) >= eval_batch

    n = min_passages(global_batch, eval_batch, fraction)
    assert fits(n) and not fits(n - 1)


def test_corpus_size_rule_counts_the_global_batch():
    from ldlm.data import check_corpus_size

    cfg = load_config(MICRO, ["train.batch_size=4", "train.grad_accum=2", "train.eval_batches=2", "data.max_passages=0"])
    with pytest.raises(UserError) as e:  # 7 training passages < 4 x 2 x 1
        check_corpus_size(cfg.data, cfg.train, 7, 8)
    assert str(e.value) == ("the corpus is too small to train on: 7 passages for training, fewer than one global "
                            "batch of 8 (train.batch_size=4 x train.grad_accum=2); use a corpus of at least 35 "
                            "passages or a smaller train.batch_size")
    with pytest.raises(UserError, match=r"31 passages for training, fewer than one global batch of 32 \(train.batch_size"
                                        r"=4 x train.grad_accum=2 x 4 processes\); use a corpus of at least 36 passages"):
        check_corpus_size(cfg.data, cfg.train, 31, 8, world_size=4)
    with pytest.raises(UserError, match=r"^the corpus is too small to train on: 3 passages for validation, fewer than one "
                                        r"evaluation batch of 4 \(train.batch_size\); use a corpus of at least 35 "
                                        r"passages, a larger data.valid_fraction \(now 0.1\) or a smaller "
                                        r"train.batch_size$"):
        check_corpus_size(cfg.data, cfg.train, 1000, 3)
    assert check_corpus_size(cfg.data, cfg.train, 80, 8) is None  # 10 global batches, 2 full evaluation batches
    near = check_corpus_size(cfg.data, cfg.train, 79, 7)
    assert near == ("small corpus: 79 passages for training are 9.9 global batches of 8, so each comes back every ~9 "
                    "steps (expect overfitting; 80 or more end this warning); 7 passages for validation fill 1 of "
                    "train.eval_batches=2 batches of 4, so validation is noisier than configured (a larger "
                    "data.valid_fraction (now 0.1) fills them)")
    lm1b = load_config(MICRO, ["data.format=lm1b", "data.max_passages=0", "train.batch_size=4"])
    with pytest.raises(UserError, match=r"1 row for validation, .* use more documents or a shorter data.seq_len, a "
                                        r"larger data.valid_docs \(now 100000\) or a smaller train.batch_size$"):
        check_corpus_size(lm1b.data, lm1b.train, 100, 1)


def _nothing_written(out: Path, cache: Path) -> None:
    assert not out.exists()  # no checkpoint, no config, no metrics, no lock: no partial run
    assert not (cache / "features").exists()  # refused before the feature cache


@pytest.mark.parametrize("config", ["micro.yaml", "micro-ar.yaml", "micro-mdlm.yaml", "micro-tencdm.yaml"])
def test_a_corpus_too_small_to_train_on_is_refused_before_any_work(tmp_path, capsys, config):
    out, cache = tmp_path / "run", tmp_path / "cache"
    err = refused(["train", "--config", str(ROOT / "configs" / config), "--data", str(lines(tmp_path / "c.txt", 3)),
                   "--out", str(out), "--quiet", f"data.cache_dir={cache}"], capsys,
                  "the corpus is too small to train on: 2 passages for training, fewer than one global batch of 16 "
                  "(train.batch_size=16 x train.grad_accum=1) and 1 passage for validation, fewer than one evaluation "
                  "batch of 16 (train.batch_size); use a corpus of at least 155 passages, a larger data.valid_fraction "
                  "(now 0.1) or a smaller train.batch_size")
    assert len(err.splitlines()) == 1
    _nothing_written(out, cache)


def test_the_builtin_corpus_and_packed_formats_are_checked_too(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    refused(["train", "--config", MICRO, "--out", str(out), "--quiet", f"data.cache_dir={cache}",
             "data.max_passages=60", "train.grad_accum=4"], capsys,
            "54 passages for training, fewer than one global batch of 64 (train.batch_size=16 x train.grad_accum=4) "
            "and 6 passages for validation, fewer than one evaluation batch of 16 (train.batch_size); use a corpus of "
            "at least 155 passages (data.max_passages=60 caps it)")
    _nothing_written(out, cache)
    pytest.importorskip("datasets")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} " + "word " * 40}) + "\n" for i in range(12)))
    for fmt, fragment in (("lm1b", "2 rows for validation, fewer than one evaluation batch of 16"),
                          ("owt", "for training, fewer than one global batch of 16")):
        refused(["train", "--config", MICRO, "--out", str(out), "--quiet", f"data.cache_dir={cache}",
                 f"data.format={fmt}", f"data.corpus={docs}", "data.valid_docs=2", "data.num_proc=1"], capsys,
                fragment)
        _nothing_written(out, cache)


def test_a_corpus_near_the_minimum_trains_with_one_warning(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--quiet", "train.steps=2", "train.batch_size=4", "train.eval_every=0", "train.threads=1",
              f"data.cache_dir={cache}"]
    rc, err = cli(["train", "--config", MICRO, "--data", str(lines(tmp_path / "c.txt", 40)), "--out", str(out),
                   *common], capsys)  # 36 training passages = 9 global batches of 4; 4 for validation
    assert rc == 0, err
    warning = ("warning: small corpus: 36 passages for training are 9.0 global batches of 4, so each comes back "
               "every ~9 steps (expect overfitting; 40 or more end this warning)")
    assert err.count("small corpus") == 1 and warning in err.splitlines()
    assert (out / "latest").read_text().strip() == "ckpt-000002"
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["corpus_warning"] == warning[len("warning: "):]
    from ldlm.plots import read_events

    assert read_events(out)[0] == start and all("event" in e for e in read_events(out))
    su = start["setup_s"]  # where start-up went: the corpus, the frozen LM's features, the whole set-up
    assert set(su) == {"corpus", "prepare", "total"} and su["total"] + 0.02 >= su["corpus"] + su["prepare"] > 0
    # comfortably above the minimum: no warning
    rc, err = cli(["train", "--config", MICRO, "--data", str(lines(tmp_path / "d.txt", 200)),
                   "--out", str(tmp_path / "big"), *common], capsys)
    assert rc == 0 and "small corpus" not in err, err
    assert "corpus_warning" not in (tmp_path / "big" / "metrics.jsonl").read_text()


# ---------------------------------------------------------------- 7. keys that apply
@pytest.mark.parametrize("config, override, algos", [
    ("micro-ar.yaml", "model.latent_dim=8", "ldlm"),
    ("micro-ar.yaml", "recipe=naive", "ldlm, tencdm"),
    ("micro-ar.yaml", "recipe.dec_noise_max=0", "ldlm, tencdm"),
    ("micro-mdlm.yaml", "sample.noise_scale=0.5", "ldlm, tencdm"),
    ("micro-ar.yaml", "model.mask_eps=0.01", "mdlm"),
    ("micro-ar.yaml", "sample.steps=10", "ldlm, tencdm, mdlm"),
    ("micro-tencdm.yaml", "model.latent_len=8", "ldlm"),
    ("micro-tencdm.yaml", "recipe.warmup=sigmoid", "ldlm"),
    ("micro-mdlm.yaml", "model.lm_layer=-3", "ldlm, tencdm"),
    ("micro.yaml", "model.width=64", "ar, mdlm"),
    ("micro.yaml", "sample.temperature=0.9", "ar, mdlm"),
    ("micro.yaml", "data.tokenizer=gpt2", "ar, mdlm"),
])
def test_keys_that_do_not_apply_to_the_algorithm_are_refused(config, override, algos):
    with pytest.raises(UserError) as e:
        load_config(str(ROOT / "configs" / config), [override])
    key = override.split("=")[0]
    algo = config[len("micro-"):-len(".yaml")] if "-" in config else "ldlm"
    assert str(e.value).startswith(f"config key '{key}' does not apply to algo={algo} (only to {algos})")


def test_yaml_keys_are_checked_too_and_shared_keys_pass(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: mdlm\nmodel:\n  width: 64\n  latent_len: 8\n")
    with pytest.raises(UserError, match="'model.latent_len' does not apply to algo=mdlm"):
        load_config(str(f))
    cfg = load_config(str(ROOT / "configs" / "micro-mdlm.yaml"), ["model.heads=4", "train.lr=1e-4",
                                                                  "sample.top_p=0.9", "sample.cache=false"])
    assert cfg.model.heads == 4 and cfg.sample.cache is False
    for algo in ("ar", "mdlm", "tencdm"):  # the output vocabulary is every model's choice
        assert load_config(str(ROOT / "configs" / f"micro-{algo}.yaml"), ["model.readout_vocab=full"])
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(str(path))  # every shipped config passes
    d = Config().to_dict()
    for key in ONLY_FOR:  # the table names real keys
        section, _, leaf = key.partition(".")
        assert section in d and (not leaf or leaf in d[section]), key


def test_choices_are_the_factories_registries(monkeypatch):
    from ldlm import config as C
    from ldlm.algorithms import ALGORITHMS
    from ldlm.data import FORMATS
    from ldlm.recipe import WARMUPS
    from ldlm.sampling import GRIDS, SOLVERS
    from ldlm.schedules import SCHEDULES
    from ldlm.serve import CHOICES
    from ldlm.timesteps import TIMESTEPS
    from ldlm.tracker import TRACKERS

    registries = {"algo": ALGORITHMS, "data.format": FORMATS, "model.schedule": SCHEDULES, "recipe.warmup": WARMUPS,
                  "recipe.timesteps": TIMESTEPS, "sample.grid": GRIDS, "sample.solver": SOLVERS,
                  "train.tracker": TRACKERS}
    for key, registry in registries.items():
        assert C.choices(key) == tuple(registry), key
    assert CHOICES == {"solver": tuple(SOLVERS), "grid": tuple(GRIDS)}  # the web page's menus too
    # a schedule added to the registry is a valid config value at once; a bad value lists the registry's names
    with pytest.raises(UserError, match=r"^config key 'model.schedule' is 'linear'; use one of 'tan', 'cosine'$"):
        load_config(MICRO, ["model.schedule=linear"])
    monkeypatch.setitem(SCHEDULES, "linear", lambda d: None)
    assert load_config(MICRO, ["model.schedule=linear"]).model.schedule == "linear"


@pytest.mark.parametrize("key", sorted(_CHOICES))
def test_every_choice_key_refuses_a_bad_value_listing_its_choices(key):
    from ldlm.config import choices

    algo = "mdlm" if key == "data.tokenizer" else "ldlm"  # a key of another algorithm is refused for that first
    with pytest.raises(UserError) as e:
        load_config(None, [f"algo={algo}", f"{key}=no-such-value"])
    assert str(e.value) == f"config key '{key}' is 'no-such-value'; use one of {', '.join(map(repr, choices(key)))}"
    for value in choices(key):
        got = load_config(None, [f"algo={algo}", f"{key}={value}"]).to_dict()
        for part in key.split("."):
            got = got[part]
        assert got == value
