"""Bad input, tried as a new user would: every case gets a one-line `error: ...` naming the problem,
a non-zero exit, and leaves every existing file as it was."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ldlm.cli import main

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "configs" / "micro.yaml")


def fast(cache) -> list[str]:
    return ["train.steps=2", "train.batch_size=4", "train.eval_every=0", "train.threads=1",
            f"data.cache_dir={cache}", "data.max_passages=40"]


def hashes(*roots: Path) -> dict:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished micro run to corrupt copies of."""
    d = tmp_path_factory.mktemp("trained")
    os.environ["LDLM_QUIET"] = "1"
    assert main(["train", "--config", MICRO, "--out", str(d / "run"), "--quiet", *fast(d / "cache")]) == 0
    return d / "run"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_QUIET", "1")
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.txt"
    good.write_text("".join(f"passage number {i} of a small corpus\n" for i in range(40)))
    return tmp_path


def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def expect_error(argv, capsys, fragment: str, keep: list[Path]) -> str:
    before = hashes(*keep)
    rc, err = run_cli(argv, capsys)
    assert rc != 0, f"{argv} exited 0"
    assert err.startswith("error: ") and "\n" not in err, err
    assert fragment in err, err
    assert hashes(*keep) == before, "an existing file was changed"
    return err


def write(path: Path, data) -> Path:
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


CORPUS_CASES = {
    "missing": (None, "not found"),
    "empty": (b"", "is empty"),
    "blank-lines-only": (b"\n  \n\n", "is empty"),
    "not-utf8": (b"hello there\n\xff\xfe caf\xe9 latin-1\n" * 3, "is not UTF-8 (byte 12, line 2)"),
    "1mb-line": (b"word " * 200_000 + b"\nshort line\n", "line 1 is 1,000,000 characters long"),
}


@pytest.mark.parametrize("case", sorted(CORPUS_CASES))
def test_bad_txt_corpus(case, env, capsys):
    data, fragment = CORPUS_CASES[case]
    path = env / f"{case}.txt"
    if data is not None:
        write(path, data)
    keep = [p for p in (path, env / "good.txt") if p.exists()]
    expect_error(["train", "--config", MICRO, "--out", str(env / "out"), "--data", str(path), *fast(env / "c")],
                 capsys, fragment, keep)
    assert not (env / "out").exists() or not any((env / "out").glob("ckpt-*"))


JSONL_CASES = {
    "no-text": ('{"text": "fine"}\n{"body": "no text field"}\n', "line 2 has no 'text' field"),
    "number-text": ('{"text": "fine"}\n{"text": 5}\n', "line 2: 'text' is int, not a string"),
    "null-text": ('{"text": null}\n', "line 1: 'text' is NoneType, not a string"),
    "not-json": ('{"text": "fine"}\n{text: oops}\n', "line 2 is not JSON"),
    "not-object": ('["text"]\n', "line 1 has no 'text' field"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_bad_jsonl_corpus(case, env, capsys):
    data, fragment = JSONL_CASES[case]
    path = write(env / f"{case}.jsonl", data)
    expect_error(["train", "--config", MICRO, "--out", str(env / "out"), "--data", str(path), *fast(env / "c")],
                 capsys, fragment, [path])


CONFIG_CASES = {
    "unknown-key": (["train.stepz=3"], "unknown config key 'train.stepz'"),
    "unknown-section": (["trian.steps=3"], "unknown config key 'trian.steps'"),
    "wrong-type-int": (["train.steps=ten"], "config key 'train.steps' expects int, got 'ten'"),
    "wrong-type-float": (["train.lr=fast"], "config key 'train.lr' expects float"),
    "wrong-type-bool": (["train.bf16=maybe"], "config key 'train.bf16' expects bool"),
    "bad-choice": (["recipe.timesteps=sometimes"], "config key 'recipe.timesteps' is 'sometimes'"),
    "not-key-value": (["train.steps"], "is not key=value"),
    "steps-0": (["train.steps=0"], "config key 'train.steps' must be positive, got 0"),
    "seq-len-over-positions": (["data.seq_len=1024"], "data.seq_len=1024 is longer than the frozen LM's 512 positions"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_override(case, env, capsys):
    extra, fragment = CONFIG_CASES[case]
    expect_error(["train", "--config", MICRO, "--out", str(env / "out"), "--data", str(env / "good.txt"),
                  *fast(env / "c"), *extra], capsys, fragment, [env / "good.txt", Path(MICRO)])


YAML_CASES = {
    "unknown-key": ("train:\n  steps: 3\n  stepz: 4\n", "unknown config key 'train.stepz'"),
    "wrong-type": ("train:\n  steps: [1, 2]\n", "config key 'train.steps' expects int"),
    "unknown-section": ("trainer:\n  steps: 3\n", "unknown config section 'trainer'"),
    "not-yaml": ("train: [unclosed\n", "is not valid YAML"),
    "not-mapping": ("- 1\n- 2\n", "must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_config(case, env, capsys):
    text, fragment = YAML_CASES[case]
    cfg = write(env / "cfg.yaml", text)
    expect_error(["train", "--config", str(cfg), "--out", str(env / "out")], capsys, fragment, [cfg])


def test_missing_config_file(env, capsys):
    expect_error(["train", "--config", str(env / "nope.yaml"), "--out", str(env / "out")], capsys,
                 "config file", [env / "good.txt"])


# ---------------------------------------------------------------- checkpoints and runs
def test_out_is_an_existing_run_without_resume(trained, env, capsys):
    expect_error(["train", "--config", MICRO, "--out", str(trained), *fast(env / "c")], capsys,
                 "already holds checkpoints; pass --resume", [trained])


def test_resume_with_another_model_config(trained, env, capsys):
    run = env / "run"
    shutil.copytree(trained, run)
    expect_error(["train", "--out", str(run), "--resume", "model.den_width=128"], capsys,
                 "model.den_width is 64 in the run, 128 now", [run])


def test_sample_a_checkpoint_whose_config_was_changed(trained, env, capsys):
    run = env / "run"
    shutil.copytree(trained, run)
    ckpt = run / (run / "latest").read_text().strip()
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model"]["latent_dim"] = 32
    (ckpt / "config.json").write_text(json.dumps(cfg))
    expect_error(["sample", "--ckpt", str(run), "--num", "2"], capsys, "it was made with another config", [run])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("command", ["sample", "resume"])
def test_corrupted_safetensors(damage, command, trained, env, capsys):
    run = env / "run"
    shutil.copytree(trained, run)
    f = run / (run / "latest").read_text().strip() / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not safetensors" * 64, "empty": b""}[damage])
    argv = (["sample", "--ckpt", str(run), "--num", "2"] if command == "sample"
            else ["train", "--out", str(run), "--resume"])
    expect_error(argv, capsys, "is corrupted or truncated", [run])


def test_checkpoint_folder_missing(env, capsys):
    expect_error(["sample", "--ckpt", str(env / "nope")], capsys, "not found", [env / "good.txt"])


@pytest.mark.parametrize("argv,fragment", [
    (["--steps", "0"], "--steps must be a positive number of steps, got 0"),
    (["--num", "-1"], "--num must be a positive number of samples, got -1"),
    (["--num", "0"], "--num must be a positive number of samples, got 0"),
    (["--noise-scale", "-2"], "--noise-scale must be >= 0"),
])
def test_bad_sample_arguments(argv, fragment, trained, env, capsys):
    expect_error(["sample", "--ckpt", str(trained), *argv, "--out", str(env / "s.jsonl")], capsys, fragment,
                 [trained])
    assert not (env / "s.jsonl").exists()


def test_exit_status_through_the_real_cli(env):
    """The same path as a user's shell: `python -m ldlm ...` prints one line and exits 2."""
    p = subprocess.run([sys.executable, "-m", "ldlm", "train", "--config", MICRO, "--out", str(env / "o"),
                        "train.stepz=1"], capture_output=True, text=True, cwd=env)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: unknown config key 'train.stepz'")
    assert "\n" not in p.stderr.strip()
