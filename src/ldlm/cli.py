"""The `ldlm` command line: train, sample (and eval, frontier).

Problems the user can fix are printed as one line, `error: ...`, with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError


def cmd_train(args) -> None:
    from . import checkpoint as ck
    from .config import load_config, parse_overrides, set_key, validate
    from .trainer import Trainer

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.corpus={args.data}")
    if args.resume and ck.Path(args.out).exists() and any(ck.Path(args.out).glob("ckpt-*")):
        # the run's own config, with any overrides given now (e.g. a longer train.steps)
        cfg = ck.load_config_of(ck.resolve_checkpoint(args.out))
        for k, v in parse_overrides(overrides):
            set_key(cfg, k, v)
        validate(cfg)
    else:
        cfg = load_config(args.config, overrides)
    result = Trainer(cfg, args.out, resume=args.resume, quiet=args.quiet).train()
    print(json.dumps({"step": result["step"], "wall_s": round(result["wall_s"], 1),
                      "train": {k: round(v, 4) for k, v in result["train"].items()},
                      "valid": {k: round(v, 4) for k, v in result["valid"].items()}}, indent=1))
    if args.samples:
        _sample_and_print(args.out, num=args.samples, steps=None, seed=0, out=os.path.join(args.out, "samples.jsonl"),
                          show=args.samples)


def _sample_and_print(ckpt, out, show=5, device="auto", **settings) -> list[dict]:
    from .generate import generate, load_model, write_samples

    model = load_model(ckpt, device=device)
    records = generate(model, **settings)
    if out:
        write_samples(records, out)
    for r in records[:show]:
        print("-", r["text"])
    distinct = len({r["text"] for r in records})
    print(f"{len(records)} samples ({distinct} distinct), {records[0]['sec_per_sample'] * 1000:.1f} ms/sample"
          + (f"; written to {out}" if out else ""))
    return records


def cmd_sample(args) -> None:
    _sample_and_print(args.ckpt, out=args.out, show=args.show, device=args.device, num=args.num, steps=args.steps,
                      seed=args.seed, solver=args.solver, noise_scale=args.noise_scale,
                      batch_size=args.batch_size, temperature=args.temperature, top_p=args.top_p,
                      decode_temperature=args.decode_temperature)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldlm", description="Latent diffusion language models, trained jointly "
                                "with their latent space.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (LDLM, or a baseline with algo=ar|mdlm)")
    t.add_argument("--config", help="YAML config (see configs/)")
    t.add_argument("--out", required=True, help="run folder for checkpoints, metrics and plots")
    t.add_argument("--data", help="corpus: a .txt (a passage per line) or .jsonl ('text' field) file")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    t.add_argument("--samples", type=int, default=0, help="after training, sample this many and print them")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100 recipe=naive")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="sample texts from a checkpoint")
    s.add_argument("--ckpt", required=True, help="run folder or ckpt-<step> folder")
    s.add_argument("--num", type=int, help="number of samples")
    s.add_argument("--steps", type=int, help="reverse-process steps")
    s.add_argument("--seed", type=int, help="sampling seed")
    s.add_argument("--solver", choices=["sde", "ode"], help="sde: ancestral (DDIM eta=1); ode: DDIM eta=0")
    s.add_argument("--noise-scale", type=float, help="scale of the injected noise (quality-diversity knob)")
    s.add_argument("--temperature", type=float, help="token temperature (baselines)")
    s.add_argument("--top-p", type=float, help="nucleus sampling (baselines)")
    s.add_argument("--decode-temperature", type=float, help="LDLM token readout temperature (0 = argmax)")
    s.add_argument("--batch-size", type=int, help="samples per batch")
    s.add_argument("--out", help="samples file (.jsonl), one JSON object per sample")
    s.add_argument("--show", type=int, default=5, help="print this many samples")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.set_defaults(func=cmd_sample)

    # evaluation: the logic lives in evaluation.py and frontier.py
    from .evaluation import add_eval_arguments

    def cmd_eval(args) -> None:
        from .evaluation import run_eval
        run_eval(args)

    def cmd_frontier(args) -> None:
        from .frontier import run_frontier
        run_frontier(args)

    e = sub.add_parser("eval", help="score a samples file: gen-PPL, entropy, MAUVE, distinct-n, beside the data")
    e.add_argument("samples", help="samples file: .jsonl (from `ldlm sample --out`) or .txt (a sample per line)")
    e.add_argument("--ckpt", help="checkpoint whose held-out split and tokenizer define the references "
                   "(default: the samples' own 'checkpoint' field)")
    e.add_argument("--out", help="write all metrics and settings to this JSON file")
    add_eval_arguments(e)
    e.set_defaults(func=cmd_eval)

    f = sub.add_parser("frontier", help="sample and score a grid of settings: gen-PPL vs entropy (CSV + PNG)")
    f.add_argument("--ckpt", required=True, help="run folder or ckpt-<step> folder")
    f.add_argument("--steps", help="comma list of reverse-process steps, e.g. 10,25,50,100")
    f.add_argument("--noise-scale", help="comma list of noise scales (LDLM), e.g. 0.7,0.85,1.0")
    f.add_argument("--temperature", help="comma list of token temperatures (AR/MDLM baselines)")
    f.add_argument("--top-p", help="comma list of nucleus sampling thresholds (baselines)")
    f.add_argument("--decode-temperature", help="comma list of LDLM readout temperatures (0 = argmax), e.g. 0,0.7")
    f.add_argument("--solver", help="comma list of solvers: sde,ode")
    f.add_argument("--num", type=int, default=128, help="samples per setting")
    f.add_argument("--sample-seed", type=int, default=0, help="sampling seed (the same for every setting)")
    f.add_argument("--out", required=True, help="folder for samples, frontier.csv, frontier.json and frontier.png")
    add_eval_arguments(f)
    f.set_defaults(func=cmd_frontier)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
