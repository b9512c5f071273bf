"""How many sampled tokens the lexicon would not have allowed where they stand (a piece that continues no word of
the training split, an end inside a word), per samples file; writes a JSON summary.

    .venv/bin/python bench/results/lexicon-s24/nonwords.py runs/s24/demo-seed0 bench/results/lexicon-s24/nonwords.json \
        runs/s24/lex-seed0/samples-*.jsonl runs/s24/lex-seed1/samples-*.jsonl
"""
import json
import sys
from pathlib import Path

import torch

from ldlm.generate import load_model


def main(ckpt: str, out: str, files: list[str]) -> None:
    torch.set_num_threads(1)
    model = load_model(ckpt, device="cpu")
    lex, vocab = model.lexicon(), model.output_vocab()
    rows = []
    for f in files:
        tokens = bad = samples = with_bad = 0
        for line in open(f):
            r = json.loads(line)
            node, n_bad = torch.zeros(1, dtype=torch.long), 0
            for t in vocab.to_local(torch.tensor(r["tokens"], dtype=torch.long)).tolist():
                n_bad += not bool(lex.allowed(node)[0, t])
                node = lex.advance(node, torch.tensor([t]))
            tokens += len(r["tokens"])
            bad += n_bad
            samples += 1
            with_bad += n_bad > 0
        rows.append({"file": str(Path(f).parent.name + "/" + Path(f).name), "tokens": tokens, "disallowed": bad,
                     "disallowed_share": bad / tokens, "samples": samples, "samples_with_any": with_bad})
        print(rows[-1])
    Path(out).write_text(json.dumps({"lexicon_words": lex.num_words, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
