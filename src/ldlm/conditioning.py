"""Conditional generation: the given parts of a passage (a prompt, a suffix, or both) and where they go.

A passage is a row of `seq_len` token positions, `[CLS] tokens [SEP] [PAD]*`. A condition fixes some of them:

    [CLS] prompt ......written...... suffix [SEP] [PAD]*
    |-- given --|                  |------ given ------|

- prompt alone: the model continues it and decides where the passage ends;
- prompt and suffix: it fills the gap between them; suffix alone: it writes what comes before;
- the suffix ends the passage: [SEP] follows it. By default it sits at the end of the row (the gap is
  everything in between); `gap=k` puts it k tokens after the prompt, the rest of the row being [PAD]
  (the conditional evaluation uses the true middle's length).

Every model receives the same `Given` (token ids and a mask of given positions) and keeps those tokens:
MDLM never masks them, AR forces them (prefix only), LDLM/TEncDM clamp the latents they determine
(see `algorithms/ldlm.py`) and overwrite the given tokens after decoding. A record's `text` is the whole
passage with the given text verbatim, as the model's tokenizer gives it back (`prompt`/`suffix` hold that
round-tripped text, `written` what the model wrote on its own).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from .data import open_text_file
from .errors import UserError


@dataclass
class Condition:
    """One sample's given text, as token ids of the model's tokenizer (no special tokens)."""
    prompt: list[int] = field(default_factory=list)  # tokens after [CLS]; [] = none
    suffix: list[int] = field(default_factory=list)  # tokens before [SEP]; [] = none
    gap: int | None = None  # tokens to write between prompt and suffix (None: up to the end of the row)
    reference: list[int] | None = None  # the true hidden tokens, when the condition comes from a passage


@dataclass
class Given:
    """A batch of conditions laid out on the model's row: `ids` [B, L] (the given token where `mask`
    is True, [PAD] elsewhere) and `mask` [B, L] bool."""
    ids: torch.Tensor
    mask: torch.Tensor

    def __getitem__(self, s: slice) -> "Given":
        return Given(self.ids[s], self.mask[s])

    def to(self, device) -> "Given":
        return Given(self.ids.to(device), self.mask.to(device))


# ---------------------------------------------------------------- special tokens of a row
def start_id(tok) -> int | None:
    return tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id


def end_id(tok) -> int | None:
    return tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id


def pad_id(tok) -> int:
    for t in (tok.pad_token_id, end_id(tok), 0):
        if t is not None:
            return t
    return 0


def stop_ids(tok) -> set[int]:
    """Tokens that end a written continuation (ids_to_text's cut)."""
    return {tok.sep_token_id, tok.pad_token_id, tok.eos_token_id} - {None}


# ---------------------------------------------------------------- building conditions
def _encode(tok, text: str, what: str) -> list[int]:
    if not isinstance(text, str):
        raise UserError(f"{what} must be a string, got {type(text).__name__}")
    specials = set(tok.all_special_ids) - {tok.unk_token_id}
    ids = [i for i in tok(text, add_special_tokens=False)["input_ids"] if i not in specials]
    if not ids:
        raise UserError(f"{what} {text!r} tokenises to nothing; give it some words")
    return ids


def make_conditions(tok, prompts=None, suffixes=None, gap: int | None = None) -> list[Condition]:
    """Conditions from texts: `prompts` and `suffixes` are a string or a list (equal lengths, or one of
    them a single string that applies to every item); None or '' means no prompt / no suffix."""
    def as_list(x):
        return [x] if isinstance(x, str) or x is None else list(x)

    ps, ss = as_list(prompts), as_list(suffixes)
    if not ps or not ss:
        raise UserError("the list of prompts is empty; give at least one prompt or suffix")
    if len(ps) != len(ss) and 1 not in (len(ps), len(ss)):
        raise UserError(f"{len(ps)} prompts but {len(ss)} suffixes; give one suffix per prompt (or one for all)")
    n = max(len(ps), len(ss))
    ps, ss = ps * (n // len(ps)), ss * (n // len(ss))
    if gap is not None and gap < 1:
        raise UserError(f"--gap must be at least 1 token, got {gap}")
    out = []
    for i, (p, s) in enumerate(zip(ps, ss)):
        where = "" if n == 1 else f" {i + 1}"
        if not p and not s:
            raise UserError(f"prompt{where} has neither a prompt nor a suffix; give one of them")
        if gap is not None and not s:
            raise UserError("--gap places the suffix; it needs --suffix (a prompt alone ends where the model ends it)")
        out.append(Condition(_encode(tok, p, f"prompt{where}") if p else [],
                             _encode(tok, s, f"suffix{where}") if s else [], gap))
    return out


def _word_starts(tok, passages: list[str], seq_len: int) -> list[tuple[list[int], list[bool]]]:
    """Per passage, its token ids at `seq_len` (special tokens dropped) and whether each begins a word
    (every token does for a tokenizer without word ids)."""
    enc = tok(passages, truncation=True, max_length=seq_len)
    specials = set(tok.all_special_ids) - {tok.unk_token_id}
    out = []
    for i, row in enumerate(enc["input_ids"]):
        try:
            words = enc.word_ids(i)
        except (ValueError, AttributeError):
            words = [None] * len(row)
        toks, starts, prev = [], [], object()
        for t, w in zip(row, words):
            if t in specials:
                continue
            toks.append(t)
            starts.append(w is None or w != prev)
            prev = w
        out.append((toks, starts))
    return out


def _snap(k: int, starts: list[bool], lo: int, hi: int) -> int:
    """The word start nearest to cut k within [lo, hi] (k itself if none): no piece starts mid-word."""
    for d in range(len(starts)):
        for j in (k + d, k - d):
            if lo <= j <= hi and j < len(starts) and starts[j]:
                return j
    return k


def conditions_from_passages(tok, passages: list[str], seq_len: int, cond_tokens: int | None = None,
                             infill: bool = False) -> tuple[list[Condition], int]:
    """Prompts cut from real passages (as the model's tokenizer reads them at its length), with the
    hidden part kept as `reference`. Continuation: the first `cond_tokens` tokens (default: about half of
    each passage's tokens). `infill`: the middle third is hidden (prompt = first third, suffix = last
    third, gap = the middle's length). Default cuts move to the nearest word start, so no piece begins
    inside a word. Returns the conditions and the number of passages too short to split (left out)."""
    if cond_tokens is not None and cond_tokens < 1:
        raise UserError(f"--cond-tokens must be at least 1, got {cond_tokens}")
    out, skipped = [], 0
    for toks, starts in _word_starts(tok, passages, seq_len):
        n = len(toks)
        if infill:
            a = _snap(round(n / 3), starts, 1, n - 2)
            b = _snap(round(2 * n / 3), starts, a + 1, n - 1)
            if a < 1 or b - a < 1 or n - b < 1:
                skipped += 1
                continue
            out.append(Condition(toks[:a], toks[b:], b - a, toks[a:b]))
        else:
            k = cond_tokens if cond_tokens is not None else _snap(n // 2, starts, 1, n - 1)
            if k < 1 or k >= n:
                skipped += 1
                continue
            out.append(Condition(toks[:k], [], None, toks[k:]))
    if not out:
        what = "a middle third" if infill else (f"more than {cond_tokens} tokens" if cond_tokens else "2 tokens")
        raise UserError(f"none of the {len(passages)} passages has {what} at seq_len {seq_len}; "
                        f"use longer passages" + ("" if infill or cond_tokens is None else " or a smaller --cond-tokens"))
    return out, skipped


def read_prompts_file(path: str) -> tuple[list[str | None], list[str | None]]:
    """`--prompts FILE`: .txt (one prompt per line) or .jsonl (objects with `prompt` and/or `suffix`)."""
    suffix, raw = open_text_file(path, "prompts file")
    prompts: list[str | None] = []
    suffixes: list[str | None] = []
    for i, ln in enumerate(raw.splitlines(), 1):
        if not ln.strip():
            continue
        if suffix == ".txt":
            prompts.append(ln.strip())
            suffixes.append(None)
            continue
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError as e:
            raise UserError(f"prompts file '{path}' line {i} is not JSON ({e.msg}); write one object per line") from None
        if not isinstance(obj, dict) or not any(isinstance(obj.get(k), str) and obj[k].strip()
                                                for k in ("prompt", "suffix")):
            raise UserError(f"prompts file '{path}' line {i} has no 'prompt' or 'suffix' string; "
                            f"write {{\"prompt\": ..., \"suffix\": ...}}")
        prompts.append(obj.get("prompt") or None)
        suffixes.append(obj.get("suffix") or None)
    if not prompts:
        raise UserError(f"prompts file '{path}' is empty; put one prompt per line")
    return prompts, suffixes


# ---------------------------------------------------------------- the row
def layout(tok, conds: list[Condition], seq_len: int) -> Given:
    """Place each condition on a row of `seq_len` positions; one-line errors when it does not fit."""
    L = seq_len
    start, end, pad = start_id(tok), end_id(tok), pad_id(tok)
    head = [start] if start is not None else []
    ids = torch.full((len(conds), L), pad, dtype=torch.long)
    mask = torch.zeros(len(conds), L, dtype=torch.bool)
    for i, c in enumerate(conds):
        pre = head + c.prompt
        post = c.suffix + ([end] if c.suffix and end is not None else [])
        room = L - len(pre) - len(post)
        if room < 1:
            what = "prompt and suffix are" if c.prompt and c.suffix else ("prompt is" if c.prompt else "suffix is")
            specials = " and ".join(x for x, on in (("[CLS]", head), ("[SEP]", end is not None)) if on)
            raise UserError(f"the {what} {len(c.prompt) + len(c.suffix)} tokens but the model writes passages of {L} "
                            f"tokens ({specials} included), which leaves no room to write; shorten to at most "
                            f"{len(c.prompt) + len(c.suffix) + room - 1} tokens")
        s0 = L - len(post)
        if c.gap is not None and c.suffix:
            if c.gap > room:
                raise UserError(f"--gap {c.gap} does not fit: the model's {L} positions leave {room} tokens between "
                                f"this prompt and suffix; use --gap <= {room}")
            s0 = len(pre) + c.gap
            mask[i, s0 + len(post):] = True  # the passage ends with the suffix: the rest of the row is [PAD]
        ids[i, : len(pre)] = torch.tensor(pre, dtype=torch.long)
        mask[i, : len(pre)] = True
        if post:
            ids[i, s0: s0 + len(post)] = torch.tensor(post, dtype=torch.long)
            mask[i, s0: s0 + len(post)] = True
    return Given(ids, mask)


def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def join(tok, prompt: list[int], middle: list[int], suffix: list[int]) -> tuple[str, str, str, str]:
    """(text, prompt, middle, suffix) as strings: the whole passage decoded in one piece when that keeps
    the given text verbatim at both ends (it does unless a cleanup rule merges across the boundary),
    else the pieces joined by spaces."""
    p, m, s = _decode(tok, prompt), _decode(tok, middle), _decode(tok, suffix)
    whole = _decode(tok, prompt + middle + suffix)
    if whole.startswith(p) and whole.endswith(s) and len(whole) >= len(p) + len(s):
        return whole, p, m, s
    return " ".join(x for x in (p, m, s) if x), p, m, s


def records(tok, conds: list[Condition], given: Given, ids: torch.Tensor) -> list[dict]:
    """One record per row: text (prompt + written + suffix), prompt, suffix, written, tokens; for
    conditions cut from passages also `reference` (the true hidden text) and `reference_text`."""
    stops = stop_ids(tok)
    specials = set(tok.all_special_ids) - {tok.unk_token_id}
    head = 1 if start_id(tok) is not None else 0
    out = []
    for c, row, m in zip(conds, ids.tolist(), given.mask.tolist()):
        a = head + len(c.prompt)
        if c.suffix:
            b = next(j for j in range(a, len(row)) if m[j])
            # in a gap, [SEP]/[PAD] mean 'a shorter middle': they are dropped, not a cut
            written = [t for t in row[a:b] if t not in specials]
        else:
            gen = row[a:]
            written = gen[: next((j for j, t in enumerate(gen) if t in stops), len(gen))]
            written = [t for t in written if t not in specials]
        text, p, w, s = join(tok, c.prompt, written, c.suffix)
        rec = {"text": text, "prompt": p, "suffix": s, "written": w, "tokens": c.prompt + written + c.suffix}
        if c.reference is not None:
            rec["reference"] = _decode(tok, c.reference)
            rec["reference_text"] = join(tok, c.prompt, c.reference, c.suffix)[0]
        out.append(rec)
    return out


# ---------------------------------------------------------------- the `ldlm sample` options
def conditions_from_args(args, model) -> tuple[list[Condition] | None, dict]:
    """The conditions `ldlm sample`'s flags ask for (None: unconditional), and notes for the records."""
    given = {k: getattr(args, k, None) for k in ("prompt", "suffix", "prompts", "cond_tokens", "source", "gap")}
    infill = bool(getattr(args, "infill", False))
    if given["prompts"] and (given["prompt"] or given["suffix"]):
        raise UserError("--prompts FILE already holds the prompts; drop --prompt/--suffix (or put them in the file)")
    if given["source"] and (given["prompt"] or given["suffix"] or given["prompts"]):
        raise UserError("--from FILE takes its prompts from the passages; drop --prompt/--suffix/--prompts")
    if (given["cond_tokens"] is not None or infill) and not given["source"]:
        raise UserError("--cond-tokens/--infill cut prompts from passages; add --from FILE (or --from valid)")
    if infill and given["cond_tokens"] is not None:
        raise UserError("--infill hides each passage's middle third; drop --cond-tokens")
    if given["source"] and given["gap"] is not None:
        raise UserError("--from sets each gap to the true middle's length; drop --gap")
    tok, L = model.tokenizer, model.cfg.data.seq_len
    if given["source"]:
        from .data import read_corpus_file

        if given["source"] == "valid":
            from .evaluation import validation_passages

            if model.cfg.data.format != "passages":
                raise UserError(f"--from valid needs the run's passages (data.format=passages; this run: "
                                f"{model.cfg.data.format}); pass --from FILE with held-out documents (.txt or .jsonl)")

            passages, where = validation_passages(model.cfg), f"validation split of {model.cfg.data.corpus}"
        else:
            passages, where = read_corpus_file(given["source"], model.cfg.data.max_line_chars), given["source"]
        conds, skipped = conditions_from_passages(tok, passages, L, given["cond_tokens"], infill)
        mode = "infill (middle third hidden)" if infill else (
            f"first {given['cond_tokens']} tokens" if given["cond_tokens"] else "first half of the tokens")
        return conds, {"condition": {"source": where, "mode": "infill" if infill else "prefix", "given": mode,
                                     "passages": len(passages), "skipped_short": skipped}}
    if given["prompts"]:
        prompts, suffixes = read_prompts_file(given["prompts"])
        return make_conditions(tok, prompts, suffixes, given["gap"]), {"condition": {"source": given["prompts"]}}
    if given["prompt"] is not None or given["suffix"] is not None:
        if given["prompt"] is not None and not given["prompt"].strip():
            raise UserError("--prompt is empty; give some words (or drop it)")
        if given["suffix"] is not None and not given["suffix"].strip():
            raise UserError("--suffix is empty; give some words (or drop it)")
        return make_conditions(tok, given["prompt"], given["suffix"], given["gap"]), {}
    if given["gap"] is not None:
        raise UserError("--gap places a suffix; it needs --suffix")
    return None, {}


def add_sample_arguments(p) -> None:
    """`ldlm sample`'s conditioning options."""
    p.add_argument("--prompt", help="continue this text (with --suffix: fill the middle between them)")
    p.add_argument("--suffix", help="end the passage with this text (alone: write what comes before it)")
    p.add_argument("--prompts", metavar="FILE", help=".txt (a prompt per line) or .jsonl ('prompt'/'suffix' fields)")
    p.add_argument("--from", dest="source", metavar="FILE",
                   help="cut prompts from the passages of a .txt/.jsonl file, or 'valid' (the run's held-out split)")
    p.add_argument("--cond-tokens", type=int, metavar="K", help="with --from: the first K tokens are the prompt "
                   "(default: half of each passage)")
    p.add_argument("--infill", action="store_true", help="with --from: hide each passage's middle third")
    p.add_argument("--gap", type=int, help="with --suffix: write exactly this many tokens before it "
                   "(default: up to the end of the row)")
    p.add_argument("--guidance", type=float, help="LDLM/TEncDM: classifier-free guidance weight for the "
                   "condition (0 = none)")

