"""Conditional generation of LDLM, MDLM, AR (and TEncDM) at the same budget: prompt continuation and
infilling on held-out passages, scored by the `ldlm-cond-v1` protocol (src/ldlm/cond_eval.py).

    .venv/bin/python bench/conditional.py --ldlm runs/tiny --mdlm runs/tiny-mdlm --ar runs/tiny-ar [--tencdm runs/tiny-tencdm]
    .venv/bin/python bench/conditional.py --quick      # smoke test: trains micro runs first
    .venv/bin/python bench/conditional.py --protocol-check   # the protocol on real text, no model

--protocol-check scores, on held-out passages of configs/tiny.yaml's corpus and length, the true hidden parts
(the data row) against the same texts paired with another passage's prompt -- a writer that ignores its
prompt -- and writes conditional-protocol.{json,md}: what the swap test and the conditional gen-PPL show.

Prefix: the first half of each held-out passage's tokens is the prompt (cut at a word start), the model
writes the rest. Infill (not AR): the middle third is hidden. Every model gets the same prompts, the
same evaluator and the same data row (the true continuations). Three example prompts (and one infill)
show what each model wrote. Writes conditional.json and conditional.md (default bench/results).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

ALGOS = ("ldlm", "tencdm", "mdlm", "ar")
EXAMPLES = [("to be or not to be", None), ("my gracious lord, the king", None), ("what light through yonder", None),
            ("good morrow, cousin", "and so farewell.")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in ALGOS:
        p.add_argument(f"--{a}", help=f"trained {a.upper()} run folder")
    p.add_argument("--quick", action="store_true", help="8 passages; trains micro runs if none given")
    p.add_argument("--num", type=int, help="held-out passages per mode (default 128; --quick 8)")
    p.add_argument("--steps", type=int, help="reverse-process steps of the diffusion models (default: each run's own)")
    p.add_argument("--guidance", type=float, default=0.0, help="LDLM/TEncDM classifier-free guidance weight")
    p.add_argument("--eval-lm", help="evaluator (default smollm2, offline); see `ldlm eval --help`")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="seed of the swap derangement and MAUVE")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    p.add_argument("--protocol-check", action="store_true", help="score true vs prompt-ignoring continuations of "
                   "held-out text (no model; --num passages, default 64)")
    p.add_argument("--config", default=str(B.ROOT / "configs" / "tiny.yaml"),
                   help="--protocol-check: the corpus, tokenizer and length (default configs/tiny.yaml)")
    a = p.parse_args(argv)
    if a.protocol_check and not a.num:
        a.num = 64
    a.num = a.num or (8 if a.quick else 128)
    return a


def quick_runs(out: Path, threads: int) -> dict:
    """Micro runs of every model (seconds each), reused when already complete."""
    from ldlm import checkpoint as ck
    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    runs = {}
    for algo in ALGOS:
        d = out / "quick-runs" / algo
        if not (d.exists() and ck.latest_name(d)):
            name = "micro" if algo == "ldlm" else f"micro-{algo}"
            cfg = load_config(str(B.ROOT / "configs" / f"{name}.yaml"), [f"train.threads={threads}"])
            B.log(f"training micro {algo} -> {d}")
            Trainer(cfg, str(d), quiet=True).train()
        runs[algo] = str(d)
    return runs


def markdown(res: dict) -> str:
    from ldlm.cond_eval import COLUMNS
    from ldlm.evaluator import evaluator_name

    def table(rows: dict) -> list[str]:
        cols = [c for c in COLUMNS if any(r and r.get(c[0]) is not None for r in rows.values())]
        lines = ["| model | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, r in rows.items():
            if r is None:
                continue
            cells = [("n/a" if r.get(k) is None else f.format(r[k])) for k, _, f in cols]
            if r.get("swap_se") is not None:
                cells[[k for k, _, _ in cols].index("swap")] += f" ± {r['swap_se']:.3f}"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    out = [f"# Conditional generation (`{res['protocol']}`)", "",
           f"Machine: {B.describe_machine(res['machine'])}; date {res['machine']['date']}, commit "
           f"{res['machine'].get('commit')}, {res['wall_s']:.0f} s. Command: `{res['machine']['command']}`.", "",
           f"{res['num']} held-out passages per mode; evaluator {evaluator_name(res['settings']['evaluator'])}. "
           "swap: NLL/token of the continuation under its own prompt minus under another passage's "
           "(± standard error; clearly below 0 when the model follows its prompt); swap-R: the suffix after "
           "its own middle minus after another's. The data row is the true continuations.", ""]
    for mode in ("prefix", "infill"):
        out += [f"## {'Prompt continuation (first half given)' if mode == 'prefix' else 'Infilling (middle third hidden)'}",
                ""] + table(res["rows"][mode]) + [""]
    return "\n".join(out + ["## Examples", ""]) + "\n" + examples(res)


def examples(res: dict) -> str:
    """What each model wrote (in brackets) for the example prompts, as a Markdown list."""
    out = ["What each model wrote (in brackets) after, or between, the given text "
           f"(sampling seed {res['sample_seed']}):", ""]
    for ex in res["examples"]:
        out.append(f"- prompt {ex['prompt']!r}" + (f", suffix {ex['suffix']!r}" if ex["suffix"] else ""))
        for algo, w in ex["written"].items():
            out.append(f"  - {algo.upper()}: {w}")
    return "\n".join(out) + "\n"


def protocol_check(a, device: str, out: Path) -> dict:
    """True hidden parts vs the same texts after another passage's prompt (a shift of 7), per mode."""
    import torch

    from ldlm import conditioning as C
    from ldlm.cond_eval import PROTOCOL, CondEvaluation, format_table
    from ldlm.config import load_config
    from ldlm.evaluation import make_evaluation, validation_passages
    from ldlm.evaluator import evaluator_name
    from ldlm.frozen_lm import load_tokenizer

    t0 = time.time()
    cfg = load_config(a.config)
    tok, L = load_tokenizer(cfg.model.lm), cfg.data.seq_len
    passages = validation_passages(cfg)[: a.num]
    ev = make_evaluation(a.eval_lm, None, None, "", seed=a.seed, device=device, threads=a.threads)
    cond = CondEvaluation(ev.lm, a.seed, ev.no_lm_reason)
    res = {"benchmark": "conditional-protocol", "protocol": PROTOCOL, "machine": B.machine_info(device),
           "config": a.config, "num": a.num, "settings": cond.settings, "rows": {}}
    for mode in ("prefix", "infill"):
        conds, _ = C.conditions_from_passages(tok, passages, L, infill=mode == "infill")
        g = C.layout(tok, conds, L)
        truth = g.ids.clone()
        for i, c in enumerate(conds):
            a0 = 1 + len(c.prompt)
            truth[i, a0: a0 + len(c.reference)] = torch.tensor(c.reference)
            if not c.suffix:
                truth[i, a0 + len(c.reference)] = tok.sep_token_id
        recs = C.records(tok, conds, g, truth)
        n = len(recs)
        ignoring = [dict(r, text=C.join(tok, c.prompt, conds[(i + 7) % n].reference, c.suffix)[0])
                    for i, (r, c) in enumerate(zip(recs, conds))]
        res["rows"][mode] = cond.rows({"ignores its prompt": ignoring})
        print(mode, n, "\n" + format_table(res["rows"][mode]))
    res["wall_s"] = time.time() - t0
    B.write_json(out / "conditional-protocol.json", res)
    lines = [f"# The conditional protocol on real text (`{PROTOCOL}`)", "",
             f"Machine: {B.describe_machine(res['machine'])}; date {res['machine']['date']}, commit "
             f"{res['machine'].get('commit')}, {res['wall_s']:.0f} s. Command: `{res['machine']['command']}`.", "",
             f"{a.num} held-out passages of {cfg.data.corpus} at seq_len {L}; evaluator "
             f"{evaluator_name(res['settings']['evaluator'])}. 'ignores its prompt': each true hidden part after another "
             "passage's prompt (and before its suffix).", ""]
    for mode, rows in res["rows"].items():
        lines += [f"## {mode}", "", "| row | gen-PPL | sfx-PPL | swap | swap-R | MAUVE |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            def f(k, fmt="{:.1f}"):
                return "n/a" if r.get(k) is None else fmt.format(r[k])
            sw = f("swap", "{:+.3f}") + ("" if r.get("swap_se") is None else f" ± {r['swap_se']:.3f}")
            swr = f("swap_right", "{:+.3f}") + ("" if r.get("swap_right_se") is None else f" ± {r['swap_right_se']:.3f}")
            lines.append(f"| {name} | {f('gen_ppl')} | {f('suffix_ppl')} | {sw} | {swr} | {f('mauve', '{:.3f}')} |")
        lines.append("")
    (out / "conditional-protocol.md").write_text("\n".join(lines), encoding="utf-8")
    return res


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    out = Path(a.out) if a.out else (B.RESULTS / "quick" if a.quick else B.RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if a.protocol_check:
        return protocol_check(a, device, out)
    runs = {k: getattr(a, k) for k in ALGOS}
    if a.quick and not any(runs.values()):
        runs = quick_runs(out, a.threads)
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        sys.exit("give at least one of --ldlm/--tencdm/--mdlm/--ar RUN, or --quick")

    from ldlm import conditioning as C
    from ldlm.cond_eval import PROTOCOL, CondEvaluation
    from ldlm.evaluation import make_evaluation, validation_passages
    from ldlm.generate import generate, load_model, write_samples

    t0 = time.time()
    models = {k: load_model(v, device=device) for k, v in runs.items()}
    first = next(iter(models.values()))
    passages = validation_passages(first.cfg)
    ev = make_evaluation(a.eval_lm, None, None, "", seed=a.seed, device=device, threads=a.threads)
    cond = CondEvaluation(ev.lm, a.seed, ev.no_lm_reason)
    res = {"benchmark": "conditional", "protocol": PROTOCOL, "quick": a.quick, "machine": B.machine_info(device),
           "runs": runs, "num": a.num, "sample_seed": a.sample_seed, "guidance": a.guidance,
           "settings": cond.settings, "rows": {}, "examples": []}
    for mode in ("prefix", "infill"):
        sets = {}
        for algo, model in models.items():
            if mode == "infill" and not model.suffix_ok:
                continue
            conds, _ = C.conditions_from_passages(model.tokenizer, passages, model.cfg.data.seq_len,
                                                  infill=mode == "infill")
            if len(conds) < a.num:
                B.log(f"note: only {len(conds)} held-out passages can be split; using all of them")
            kw = {"steps": a.steps, "guidance": a.guidance} if algo in ("ldlm", "tencdm") else \
                ({"steps": a.steps} if algo == "mdlm" else {})
            recs = generate(model, conditions=conds[: a.num], seed=a.sample_seed, **kw)
            write_samples(recs, out / "conditional-samples" / f"{algo}-{mode}.jsonl")
            sets[algo] = recs
            B.log(f"{mode} {algo}: {len(recs)} samples, {recs[0]['sec_per_sample'] * 1000:.1f} ms/sample")
        res["rows"][mode] = cond.rows(sets)
    for prompt, suffix in EXAMPLES:
        ex = {"prompt": prompt, "suffix": suffix, "written": {}}
        for algo, model in models.items():
            if suffix and not model.suffix_ok:
                continue
            kw = {"steps": a.steps, "guidance": a.guidance} if algo in ("ldlm", "tencdm") else \
                ({"steps": a.steps} if algo == "mdlm" else {})
            r = generate(model, prompts=prompt, suffixes=suffix, num=1, seed=a.sample_seed, **kw)[0]
            ex["written"][algo] = " ".join(x for x in (r["prompt"], f"[{r['written']}]", r["suffix"]) if x)
        res["examples"].append(ex)
    res["wall_s"] = time.time() - t0
    B.write_json(out / "conditional.json", res)
    (out / "conditional.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
