"""OpenWebText/LM1B pipelines offline: a small local dataset in the hub's format ('text' per document)
goes through the same `datasets` load -> multiprocess tokenise -> memmap cache path as the hub data,
and the paper-scale configs build and run one step on CPU with a reduced batch."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets", reason="OpenWebText/LM1B need the hub-data extra: pip install 'ldlm[hub-data]' (make setup installs it)")

from ldlm import hubdata  # noqa: E402
from ldlm.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the a of river king night sea stone light old new song city road fire winter held ran over under".split()


def write_docs(path: Path, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))).capitalize() + "." for _ in range(n)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return docs


def data_cfg(tmp_path, corpus, fmt, seq_len, **kw):
    ov = [f"data.format={fmt}", "data.hf_dataset=", f"data.corpus={corpus}", f"data.seq_len={seq_len}",
          f"data.cache_dir={tmp_path / 'cache'}", "data.num_proc=2", *[f"data.{k}={v}" for k, v in kw.items()]]
    return load_config(None, ov).data


def test_owt_packs_documents_with_eot_and_holds_out_the_last_documents(tmp_path, monkeypatch):
    docs = write_docs(tmp_path / "owt.jsonl", 80)
    tok = hubdata.gpt2_tokenizer()
    assert tok.eos_token_id == 50256 and len(tok) == 50257
    dc = data_cfg(tmp_path, tmp_path / "owt.jsonl", "owt", 64, valid_docs=10)
    corpus = hubdata.build_hub_corpus(dc, tok)

    def stream(ds):
        out = []
        for d in ds:
            out += tok(d, add_special_tokens=False)["input_ids"] + [50256]
        return out

    train, valid = stream(docs[:70]), stream(docs[70:])
    assert len(corpus.train) == len(train) // 64 and len(corpus.valid) == len(valid) // 64
    assert corpus.train.ids[torch.arange(len(corpus.train))].flatten().tolist() == train[: len(corpus.train) * 64]
    assert corpus.valid.ids[:].flatten().tolist() == valid[: len(corpus.valid) * 64]
    assert corpus.train.mask[torch.tensor([0, 1])].all()
    assert corpus.train.ids.arr.dtype.name == "uint16"
    meta = next((tmp_path / "cache").glob("tokens-*/meta.json"))
    assert json.loads(meta.read_text())["documents"] == {"train": 70, "valid": 10}
    # reused, not rebuilt
    monkeypatch.setattr(hubdata, "_build_cache", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = hubdata.build_hub_corpus(dc, tok)
    assert torch.equal(again.train.ids[torch.arange(5)], corpus.train.ids[torch.arange(5)])


@pytest.mark.parametrize("packed", [False, True])
def test_lm1b_sentences_padded_or_packed(tmp_path, packed):
    from ldlm.frozen_lm import load_tokenizer

    docs = write_docs(tmp_path / "lm1b.jsonl", 50, seed=1)
    tok = load_tokenizer("minilm")  # the bert-base-uncased WordPiece vocabulary
    dc = data_cfg(tmp_path, tmp_path / "lm1b.jsonl", "lm1b", 24, valid_docs=5, packed=packed)
    corpus = hubdata.build_hub_corpus(dc, tok)
    enc = [tok(d, truncation=True, max_length=24)["input_ids"] for d in docs]
    if not packed:
        assert len(corpus.train) == 45 and len(corpus.valid) == 5
        ids, mask = corpus.train.ids[torch.arange(45)], corpus.train.mask[torch.arange(45)]
        for i in range(45):
            n = len(enc[i])
            assert ids[i, :n].tolist() == enc[i] and mask[i].sum() == n and (ids[i, n:] == tok.pad_token_id).all()
        assert ids[:, 0].eq(tok.cls_token_id).all()
        assert corpus.valid.texts[0] == tok.decode(enc[45], skip_special_tokens=True)
    else:
        flat = [t for e in enc[:45] for t in e]
        assert len(corpus.train) == len(flat) // 24
        assert corpus.train.ids[:].flatten().tolist() == flat[: len(corpus.train) * 24]
        assert corpus.train.mask[:].all()


def tiny_gpt2(folder: Path) -> Path:
    """A randomly initialised 2-layer GPT-2 with 1024 positions and the real GPT-2 tokenizer: stands in for
    the frozen GPT-2 small offline (hub weights can't be downloaded here)."""
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=1024)).save_pretrained(folder)
    hubdata.gpt2_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["lm1b", "owt"])
def test_paper_scale_config_runs_one_step_on_cpu(name, tmp_path):
    from ldlm.trainer import Trainer

    write_docs(tmp_path / "docs.jsonl", 120 if name == "owt" else 40, seed=2)
    if name == "owt":  # long documents so a few 1024-token rows exist
        docs = [json.loads(x)["text"] for x in (tmp_path / "docs.jsonl").read_text().splitlines()]
        (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": " ".join(docs[i:i + 12])}) + "\n"
                                                     for i in range(0, 120, 4)))
        lm = str(tiny_gpt2(tmp_path / "gpt2"))
    else:
        lm = "minilm"  # same uncased WordPiece vocabulary as bert-base-uncased; hidden 384 instead of 768
    # owt: 6 documents pack into 2 validation rows, one evaluation batch (fewer is refused as too small)
    ov = ["data.hf_dataset=", f"data.corpus={tmp_path / 'docs.jsonl'}", f"data.valid_docs={6 if name == 'owt' else 4}",
          f"data.cache_dir={tmp_path / 'cache'}", "data.num_proc=2", f"model.lm={lm}", "train.batch_size=2",
          "train.grad_accum=1", "train.steps=1", "train.eval_batches=1", "train.threads=2", "train.bf16=false"]
    cfg = load_config(str(ROOT / "configs" / f"{name}.yaml"), ov)
    tr = Trainer(cfg, str(tmp_path / "run"), quiet=True)
    den = sum(p.numel() for p in tr.model.denoiser.parameters())
    assert 80e6 < den < 130e6, den  # bert-base-sized denoiser, as configured
    tr.wrapped.train()
    t0 = time.time()
    logs, gnorm, skipped = tr._step()  # one optimizer step (the checkpoint of ~2 GB is not written here)
    dt = time.time() - t0
    assert not skipped and torch.isfinite(torch.tensor(logs["loss"])) and gnorm > 0
    print(f"{name}: one step of 2 x {cfg.data.seq_len} tokens in {dt:.1f} s = {2 * cfg.data.seq_len / dt:.0f} tok/s")
