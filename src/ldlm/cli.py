"""The `ldlm` command line: train, sample, eval, frontier, export, push, serve, cache, config show.

One section per command: `cmd_<name>` runs it, `add_<name>` declares its flags, defaults and
examples. Problems the user can fix are printed as one line, `error: ...`, with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from .errors import UserError


def boolean(text: str) -> bool:
    """argparse type of a true/false flag (`config.boolean`, imported only when such a flag is given)."""
    from .config import boolean as parse

    return parse(text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option's default shown unless its help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and "default" not in text and action.default not in (None, False, [])
                and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _parser(sub, name: str, help_: str, examples: list[str], extra: str = ""):
    width = max(len(e.split("  #")[0]) for e in examples)
    lines = [f"  {e.split('  #')[0]:<{width}}  # {e.split('  #')[1].strip()}" if "  #" in e else f"  {e}"
             for e in examples]
    epilog = "examples:\n" + "\n".join(lines) + (f"\n\n{extra}" if extra else "")
    return sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", epilog=epilog,
                          formatter_class=HelpFormatter)


def _lazy(module: str, name: str):
    """A command whose logic is `ldlm.<module>.<name>(args)`, imported only when it runs (fast --help)."""
    def run(args) -> None:
        import importlib

        getattr(importlib.import_module(f".{module}", __package__), name)(args)
    return run


def _from_ckpt(key: str) -> str:
    return f"default: the checkpoint's sample.{key}"


# ---------------------------------------------------------------- train
def cmd_train(args) -> None:
    from .resume import train_config
    from .trainer import Trainer

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.corpus={args.data}")
    cfg, note = train_config(args.out, args.config, overrides, args.resume)
    if note:
        print(note, file=sys.stderr)
    result = Trainer(cfg, args.out, resume=args.resume, quiet=args.quiet, command=args.command_line).train()
    print(json.dumps({"step": result["step"], "wall_s": round(result["wall_s"], 1),
                      "train": {k: round(v, 4) for k, v in result["train"].items()},
                      "valid": {k: round(v, 4) for k, v in result["valid"].items()}}, indent=1))
    if args.samples:
        _sample_and_print(args.out, num=args.samples, seed=0, out=os.path.join(args.out, "samples.jsonl"),
                          show=args.samples)


def _config_keys_help() -> str:
    from .config import describe, Config

    sections: dict[str, list[str]] = {}
    for key, *_ in describe(Config()):
        section, _, name = key.rpartition(".")
        sections.setdefault(section or "(top level)", []).append(name)
    body = "\n".join(f"  {s}: {' '.join(names)}" for s, names in sections.items())
    return ("config keys (YAML sections, or section.key=value after the flags; `ldlm config show CONFIG` prints "
            "each one's value, default and meaning):\n" + body)


def add_train(sub) -> None:
    t = _parser(sub, "train", "train a model (LDLM, or a baseline with algo=ar|mdlm)", [
        "ldlm train --config configs/tiny.yaml --out runs/tiny  # the demo model, 7 min on 2 CPU cores",
        "ldlm train --config configs/micro.yaml --out runs/micro train.steps=50 recipe=naive  # seconds; overrides",
        "ldlm train --config configs/tiny.yaml --out runs/mine --data my.txt  # your corpus, a passage per line",
        "ldlm train --out runs/tiny --resume train.steps=1000  # continue (or extend) a run",
    ], extra=_config_keys_help())
    t.add_argument("--config", help="YAML config (see configs/; default: the built-in defaults)")
    t.add_argument("--out", required=True, help="run folder for checkpoints, metrics and plots")
    t.add_argument("--data", help="corpus: a .txt (a passage per line) or .jsonl ('text' field) file "
                   "(default: data.corpus of the config)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    t.add_argument("--samples", type=int, default=0, help="after training, sample this many and print them "
                   "(default: 0, none)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100 recipe=naive")
    t.set_defaults(func=cmd_train)


# ---------------------------------------------------------------- sample
def _sample_and_print(ckpt, out, show=5, device="auto", trajectory=False, model=None, extra=None,
                      **settings) -> list[dict]:
    from .generate import generate, load_model, write_samples

    model = model or load_model(ckpt, device=device)
    records = generate(model, return_trajectory=trajectory, progress=True, **settings)
    for r in records:
        r.update(extra or {})
    if out:
        write_samples(records, out)
    for r in records[:show]:
        if "written" in r:  # conditional: what the model wrote, in brackets between the given text
            print("-", " ".join(x for x in (r["prompt"], f"[{r['written']}]", r["suffix"]) if x))
        else:
            print("-", r["text"])
    if trajectory:
        print("trajectory of the first sample (step, t, ms for the batch, text):")
        for e in records[0]["trajectory"]:
            t = "" if e["t"] is None else f"{e['t']:.3f}"
            print(f"{e['step']:>5} {t:>6} {e['ms']:8.2f}  {e['text']}")
    distinct = len({r["text"] for r in records})
    print(f"{len(records)} samples ({distinct} distinct), {records[0]['sec_per_sample'] * 1000:.1f} ms/sample"
          + (" (incl. decoding every step)" if trajectory else "") + (f"; written to {out}" if out else ""))
    return records


def cmd_sample(args) -> None:
    from .conditioning import conditions_from_args
    from .generate import load_model

    model = load_model(args.ckpt, device=args.device)
    conditions, extra = conditions_from_args(args, model)  # None: unconditional (conditioning.py)
    _sample_and_print(args.ckpt, out=args.out, show=args.show, trajectory=args.trajectory, model=model, extra=extra,
                      conditions=conditions, num=args.num, steps=args.steps, grid=args.grid, seed=args.seed,
                      solver=args.solver, noise_scale=args.noise_scale, decode_temperature=args.decode_temperature,
                      decode_iters=args.decode_iters,
                      round_below=args.round_below, round_temperature=args.round_temperature,
                      readout_contrast=args.readout_contrast, stop_mass=args.stop_mass,
                      mean_guidance=args.mean_guidance, lexicon=args.lexicon, lexicon_beam=args.lexicon_beam,
                      batch_size=args.batch_size, temperature=args.temperature, top_p=args.top_p,
                      guidance=args.guidance)


def add_sample(sub) -> None:
    s = _parser(sub, "sample", "sample texts from a checkpoint, an export folder or a hub id", [
        "ldlm sample --ckpt runs/tiny --num 128 --steps 50 --out runs/tiny/samples.jsonl",
        "ldlm sample --ckpt runs/tiny --num 2 --steps 20 --trajectory  # print the text at every step",
        "ldlm sample --ckpt exports/tiny --noise-scale 0.8  # an `ldlm export` folder",
        "ldlm sample --ckpt runs/tiny-ar --temperature 0.8 --top-p 0.95  # the AR baseline",
        "ldlm sample --ckpt runs/tiny --prompt 'to be or not to be' --num 4  # continue a prompt",
        "ldlm sample --ckpt runs/tiny --prompt 'good morrow' --suffix 'and so farewell.'  # fill the middle",
        "ldlm sample --ckpt runs/tiny --from valid --infill --num 128 --out infill.jsonl  # for `ldlm eval`",
    ], extra="A flag the checkpoint's sampler does not read is an error: LDLM (and TEncDM) read --steps --grid\n"
             "--solver --noise-scale --decode-temperature --decode-iters --round-below --round-temperature\n"
             "--readout-contrast --stop-mass --mean-guidance --lexicon --lexicon-beam --guidance; MDLM --steps "
             "--temperature --top-p; AR --temperature --top-p --lexicon (all: --num --batch-size --seed). AR takes a prompt,\n"
             "not a suffix.")
    s.add_argument("--ckpt", required=True, help="run folder, ckpt-<step> folder, export folder or hub id (owner/name)")
    s.add_argument("--num", type=int, help="number of samples (" + _from_ckpt("num") + ")")
    s.add_argument("--steps", type=int, help="reverse-process steps, LDLM and MDLM (" + _from_ckpt("steps") + ")")
    s.add_argument("--seed", type=int, help="sampling seed (" + _from_ckpt("seed") + ")")
    s.add_argument("--grid", help="LDLM: time grid of the steps, logsnr = uniform in log-SNR, uniform = in t ("
                   + _from_ckpt("grid") + ")")
    s.add_argument("--solver", help="LDLM: sde = ancestral (DDIM eta=1), ode = DDIM eta=0 ("
                   + _from_ckpt("solver") + ")")
    s.add_argument("--noise-scale", type=float, help="LDLM: scale of the injected noise, the quality-diversity "
                   "knob (" + _from_ckpt("noise_scale") + ")")
    s.add_argument("--decode-temperature", type=float, help="LDLM: token readout temperature, 0 = argmax ("
                   + _from_ckpt("decode_temperature") + ")")
    s.add_argument("--decode-iters", type=int, help="LDLM with a masked token decoder: its parallel passes per "
                   "readout (" + _from_ckpt("decode_iters") + ")")
    s.add_argument("--round-below", type=float, help="LDLM: at steps below this time, read the estimate out as "
                   "text and encode it again (0 = never; " + _from_ckpt("round_below") + ")")
    s.add_argument("--round-temperature", type=float, help="LDLM: token temperature of that readout, 0 = argmax ("
                   + _from_ckpt("round_temperature") + ")")
    s.add_argument("--readout-contrast", type=float, help="LDLM: readout scores log p(token|z) - c log p(token|mean "
                   "latent): less of what the decoder writes for any latent (0 = plain; " + _from_ckpt("readout_contrast") + ")")
    s.add_argument("--stop-mass", type=float, help="LDLM: a position is the end when [SEP]+[PAD] hold at least this "
                   "probability (0 = whichever token wins; " + _from_ckpt("stop_mass") + ")")
    s.add_argument("--mean-guidance", type=float, help="LDLM: each step's estimate z0 becomes z0 + g z0, away from "
                   "the mean latent (0 = none; " + _from_ckpt("mean_guidance") + ")")
    s.add_argument("--lexicon", type=boolean, help="LDLM/AR: write only words the training corpus spells, true or false ("
                   + _from_ckpt("lexicon") + ")")
    s.add_argument("--lexicon-beam", type=int, help="LDLM with --lexicon true: beam width of its readout's search ("
                   + _from_ckpt("lexicon_beam") + ")")
    s.add_argument("--temperature", type=float, help="AR/MDLM: token temperature (" + _from_ckpt("temperature") + ")")
    s.add_argument("--top-p", type=float, help="AR/MDLM: nucleus sampling (" + _from_ckpt("top_p") + ")")
    s.add_argument("--batch-size", type=int, help="samples per batch (" + _from_ckpt("batch_size") + ")")
    s.add_argument("--trajectory", action="store_true", help="record the text at every sampling step (in --out) "
                   "and print the first sample's")
    s.add_argument("--out", help="samples file (.jsonl), one JSON object per sample (default: print only)")
    s.add_argument("--show", type=int, default=5, help="print this many samples")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    from .conditioning import add_sample_arguments

    add_sample_arguments(s)  # --prompt --suffix --prompts --from --cond-tokens --infill --gap --guidance
    s.set_defaults(func=cmd_sample)



# ---------------------------------------------------------------- cache (logic in cache.py)
def add_cache(sub) -> None:
    c = _parser(sub, "cache", "list or clear the cache of frozen-LM features and tokenised corpora", [
        "ldlm cache list  # what is cached, and how large",
        "ldlm cache clear --dir /tmp/ldlm-cache  # remove the cache folder's files",
    ])
    c.add_argument("action", choices=["list", "clear"])
    c.add_argument("--dir", help="cache folder (default: $XDG_CACHE_HOME/ldlm, else ~/.cache/ldlm)")
    c.set_defaults(func=_lazy("cache", "run_cache"))


# ---------------------------------------------------------------- eval and frontier (logic in evaluation.py, frontier.py)
def add_eval(sub) -> None:
    from .evaluation import add_eval_arguments

    e = _parser(sub, "eval", "score a samples file: gen-PPL, entropy, MAUVE, distinct-n, beside the data", [
        "ldlm eval runs/tiny/samples.jsonl --out runs/tiny/eval.json  # references: the run's validation split",
        "ldlm eval other.txt --reference held_out.txt  # any texts, a sample per line",
        "ldlm eval runs/tiny/samples.jsonl --eval-lm gpt2-large  # paper-comparable evaluator (needs the hub)",
        "ldlm eval infill.jsonl  # from `ldlm sample --from valid [--infill]`: the conditional protocol ldlm-cond-v1",
    ])
    e.add_argument("samples", help="samples file: .jsonl (from `ldlm sample --out`) or .txt (a sample per line)")
    e.add_argument("--ckpt", help="checkpoint whose held-out split and tokenizer define the references "
                   "(default: the samples' own 'checkpoint' field)")
    e.add_argument("--out", help="write all metrics and settings to this JSON file (default: print only)")
    add_eval_arguments(e)
    e.set_defaults(func=_lazy("evaluation", "run_eval"))


def add_frontier(sub) -> None:
    from .evaluation import add_eval_arguments

    f = _parser(sub, "frontier", "sample and score a grid of settings: gen-PPL vs entropy (CSV + PNG)", [
        "ldlm frontier --ckpt runs/tiny --steps 10,25,50,100 --noise-scale 0.7,0.85,1.0 --out runs/tiny/frontier",
        "ldlm frontier --ckpt runs/tiny-ar --temperature 0.7,0.85,1.0 --out runs/tiny-ar/frontier  # a baseline",
    ])
    f.add_argument("--ckpt", required=True, help="run folder, ckpt-<step> folder, export folder or hub id")
    f.add_argument("--steps", help="comma list of reverse-process steps (LDLM, MDLM), e.g. 10,25,50,100")
    f.add_argument("--noise-scale", help="comma list of noise scales (LDLM), e.g. 0.7,0.85,1.0")
    f.add_argument("--temperature", help="comma list of token temperatures (AR/MDLM baselines)")
    f.add_argument("--top-p", help="comma list of nucleus sampling thresholds (baselines)")
    f.add_argument("--decode-temperature", help="comma list of LDLM readout temperatures (0 = argmax), e.g. 0,0.7")
    f.add_argument("--decode-iters", help="comma list of a masked token decoder's passes (LDLM), e.g. 4,8,16")
    f.add_argument("--round-below", help="comma list of rounding times (LDLM; 0 = never), e.g. 0,0.1")
    f.add_argument("--round-temperature", help="comma list of rounding readout temperatures (LDLM; 0 = argmax), e.g. 0,0.7")
    f.add_argument("--readout-contrast", help="comma list of readout contrasts (LDLM; 0 = plain), e.g. 0,0.15,0.3")
    f.add_argument("--stop-mass", help="comma list of end-token masses (LDLM; 0 = argmax end), e.g. 0,0.5")
    f.add_argument("--mean-guidance", help="comma list of guidance weights away from the mean latent (LDLM; 0 = none), "
                   "e.g. 0,0.3,0.6")
    f.add_argument("--lexicon", help="comma list of true/false: write only the training corpus's words (LDLM, AR)")
    f.add_argument("--lexicon-beam", help="comma list of the lexicon readout's beam widths (LDLM), e.g. 1,8")
    f.add_argument("--solver", help="comma list of solvers (LDLM): sde,ode")
    f.add_argument("--num", type=int, default=128, help="samples per setting")
    f.add_argument("--sample-seed", default="0", help="sampling seed, the same for every setting; a comma list "
                   "(e.g. 0,1,2) samples every setting once per seed and reports each metric's mean and spread")
    f.add_argument("--out", required=True, help="folder for samples, frontier.csv, frontier.json and frontier.png")
    add_eval_arguments(f)
    f.set_defaults(func=_lazy("frontier", "run_frontier"))


# ---------------------------------------------------------------- export and push (logic in export.py, hub.py)
def cmd_export(args) -> None:
    from .export import export_run, read_marker

    out = export_run(args.run, args.out, eval_json=args.eval, force=args.force)
    meta = read_marker(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    size = sum((out / f).stat().st_size for f in files) / 1e6
    print(f"exported {meta['source_checkpoint']} ({meta['algo']}, EMA weights) to {out}: {len(files)} files, "
          f"{size:.1f} MB" + ("" if meta.get("evaluation") else "; no evaluation found (see README.md there)"))
    print(f"try: ldlm sample --ckpt {out} --num 4   |   share: ldlm push {out} OWNER/NAME")


def add_export(sub) -> None:
    x = _parser(sub, "export", "write an inference-only model folder: EMA weights, config, tokenizer, model card", [
        "ldlm export runs/tiny exports/tiny  # the newest checkpoint; its evaluation JSON if the run has one",
        "ldlm export runs/tiny/ckpt-000500 exports/tiny-500 --eval runs/tiny/eval.json",
    ])
    x.add_argument("run", help="run folder (its latest checkpoint) or ckpt-<step> folder")
    x.add_argument("out", help="new folder to write (it must not exist, or be empty)")
    x.add_argument("--eval", help="evaluation JSON (`ldlm eval --out`) of samples from this checkpoint "
                   "(default: the newest one in the run folder)")
    x.add_argument("--force", action="store_true", help="replace OUT if it is a previous export")
    x.set_defaults(func=cmd_export)


def cmd_push(args) -> None:
    from .hub import push

    print(f"pushed {args.folder} to {args.repo_id}: {push(args.folder, args.repo_id, private=args.private)}")


def add_push(sub) -> None:
    p = _parser(sub, "push", "upload an export folder to the Hugging Face Hub", [
        "ldlm push exports/tiny alice/ldlm-tiny  # then: ldlm sample --ckpt alice/ldlm-tiny",
        "ldlm push exports/tiny alice/ldlm-tiny --private",
    ], extra="Needs a hub token (`hf auth login` or HF_TOKEN) and the network.")
    p.add_argument("folder", help="a folder written by `ldlm export`")
    p.add_argument("repo_id", help="hub model repo, owner/name (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.set_defaults(func=cmd_push)


# ---------------------------------------------------------------- serve (logic in serve.py)
def add_serve(sub) -> None:
    v = _parser(sub, "serve", "a local web page: sample and watch the denoising step by step", [
        "ldlm serve --ckpt runs/tiny  # then open http://127.0.0.1:7860/",
        "ldlm serve --ckpt exports/tiny --port 8000 --max-num 8 --max-steps 100",
    ], extra="The page takes sampling numbers only (no paths or code); requests run one at a time.")
    v.add_argument("--ckpt", required=True, help="run folder, ckpt-<step> folder, export folder or hub id")
    v.add_argument("--host", default="127.0.0.1", help="address to bind; anything but a loopback address exposes "
                   "the page to the network")
    v.add_argument("--port", type=int, default=7860, help="port (0 = any free port)")
    v.add_argument("--max-num", type=int, default=16, help="most samples one request may ask for")
    v.add_argument("--max-steps", type=int, default=200, help="most sampling steps one request may ask for")
    v.add_argument("--queue", type=int, default=4, help="requests admitted at once (running + waiting); "
                   "more get 'busy'")
    v.add_argument("--device", default="auto", help="auto, cpu or cuda")
    v.add_argument("--quiet", action="store_true", help="no line per request")
    v.set_defaults(func=_lazy("serve", "run_serve"))


# ---------------------------------------------------------------- config show
def _fmt(v) -> str:
    return "''" if v == "" else str(v)


def cmd_config(args) -> None:
    from pathlib import Path

    from . import checkpoint as ck
    from .config import describe, load_config, parse_overrides, set_key, validate

    src, overrides = args.config, list(args.overrides)
    if src and "=" in src and not Path(src).exists():  # `ldlm config show key=value`: defaults + overrides
        src, overrides = None, [src, *overrides]
    if src and Path(src).is_dir():
        cfg = ck.load_config_of(Path(src) if (Path(src) / "config.json").is_file() and not (Path(src) / "latest").is_file()
                                else ck.resolve_checkpoint(src))
        for k, v in parse_overrides(overrides):
            set_key(cfg, k, v)
        validate(cfg)
    else:
        cfg = load_config(src, overrides)  # YAML (JSON is YAML too)
    rows = describe(cfg)
    wk = max(len(r[0]) for r in rows)
    wv = min(24, max(len(_fmt(r[1])) for r in rows))
    wd = min(24, max(len(_fmt(r[2])) for r in rows))
    print(f"  {'key':<{wk}}  {'value':<{wv}}  {'default':<{wd}}  meaning   (* = differs from the default)")
    for key, v, d, doc in rows:
        print(f"{'*' if v != d else ' '} {key:<{wk}}  {_fmt(v):<{wv}}  {_fmt(d):<{wd}}  {doc}")


def add_config(sub) -> None:
    c = _parser(sub, "config", "show a config: every key with its value, default and meaning", [
        "ldlm config show configs/tiny.yaml",
        "ldlm config show configs/micro.yaml train.steps=50  # with overrides, as `ldlm train` would apply them",
        "ldlm config show runs/tiny  # the config a run (or export) was trained with",
        "ldlm config show  # the built-in defaults",
    ])
    c.add_argument("action", choices=["show"], help="what to do (show)")
    c.add_argument("config", nargs="?", help="YAML/JSON file, run folder, checkpoint or export folder "
                   "(default: the built-in defaults)")
    c.add_argument("overrides", nargs="*", help="section.key=value overrides")
    c.set_defaults(func=cmd_config)


# ---------------------------------------------------------------- the parser
def _version() -> str:
    import importlib.metadata as md
    import platform

    from . import __version__

    try:
        torch = md.version("torch")
    except md.PackageNotFoundError:
        torch = "not installed"
    return f"ldlm {__version__} (torch {torch}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldlm", formatter_class=HelpFormatter,
                                description="Latent diffusion language models, trained jointly with their latent "
                                "space; AR and MDLM baselines in the same harness.",
                                epilog="`ldlm COMMAND --help` shows each command's flags, defaults and examples.\n"
                                "Quick start: ldlm train --config configs/micro.yaml --out runs/micro && "
                                "ldlm serve --ckpt runs/micro")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_sample, add_eval, add_frontier, add_export, add_push, add_serve, add_cache,
                add_config):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "ldlm " + shlex.join(argv)  # recorded in the run's log, shown in an export's card
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a TrainingInterrupted carries its message and 128 + signal number
        print(f"error: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
