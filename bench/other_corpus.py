"""A second corpus of another register, built offline: the prose of Python docstrings.

    .venv/bin/python bench/other_corpus.py --out runs/other-corpus/stdlib-docs.txt
    .venv/bin/ldlm train --config configs/tiny.yaml --data runs/other-corpus/stdlib-docs.txt --out runs/other-corpus/tiny
    .venv/bin/python bench/quality.py --run other=runs/other-corpus/tiny --target demo=other --out bench/results/other-corpus

The built-in corpus is Early Modern English verse and dialogue; this one is present-day technical
prose, and it is on every machine that has the project's environment, so the check needs no download.
Every module, class and function docstring of the standard library and of the installed packages (the
pinned lock's; tests, idlelib and lib2to3 left out) is split into paragraphs; a paragraph is kept when it reads as prose: no indented lines (code, tables), no
doctest prompts, at least 8 words, mostly alphabetic words, ending with a full stop. Sentences are
packed into passages of about `--passage-words` words (as the built-in corpus is), duplicates
dropped, the order fixed (sorted files), up to `--max-words`. Writes a `.txt`, one passage per line,
for `--data`. The text is generated, never committed (runs/ is git-ignored).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import sysconfig
from pathlib import Path

SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "turtledemo"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstrings(path: Path):
    """Every docstring of one source file (module, classes, functions), cleaned of indentation."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def is_prose(paragraph: str) -> bool:
    """A paragraph of running text: no indented or doctest lines, >= 8 words, mostly words, ends a sentence."""
    lines = paragraph.splitlines()
    if any(ln.startswith((" ", "\t", ">>>", "...")) for ln in lines):
        return False
    words = paragraph.split()
    if len(words) < 8 or not paragraph.rstrip().endswith("."):
        return False
    wordy = sum(bool(re.fullmatch(r"[A-Za-z][a-z'-]*[,.;:]?", w)) for w in words)
    return wordy >= 0.8 * len(words)


def passages(paragraphs, passage_words: int):
    """Whole sentences packed into passages of about `passage_words` words (a paragraph never spans two)."""
    for par in paragraphs:
        cur: list[str] = []
        for sent in SENTENCE_END.split(" ".join(par.split())):
            cur.append(sent)
            if sum(len(s.split()) for s in cur) >= passage_words:
                yield " ".join(cur)
                cur = []
        if cur and sum(len(s.split()) for s in cur) >= passage_words // 2:
            yield " ".join(cur)


def build(roots: list[Path], passage_words: int = 30, max_words: int = 900_000) -> list[str]:
    """The corpus: prose passages of the docstrings under `roots`, deduplicated, in sorted-file order."""
    files = [p for root in roots for p in sorted(root.rglob("*.py"))
             if not SKIP_DIRS & set(p.relative_to(root).parts[:-1])]
    seen, out, words = set(), [], 0
    for f in files:
        paragraphs = (par for doc in docstrings(f) for par in re.split(r"\n\s*\n", doc) if is_prose(par))
        for p in passages(paragraphs, passage_words):
            if p in seen:
                continue
            seen.add(p)
            out.append(p)
            words += len(p.split())
            if words >= max_words:
                return out
    return out


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/other-corpus/stdlib-docs.txt", help="the .txt to write")
    p.add_argument("--root", action="append", help="source tree to read; repeatable (default: the standard library, "
                   "then this interpreter's installed packages -- the project's pinned environment)")
    p.add_argument("--passage-words", type=int, default=30, help="about this many words per passage (default 30)")
    p.add_argument("--max-words", type=int, default=900_000, help="stop after this many words (default 900000, "
                   "about the built-in corpus's size)")
    a = p.parse_args(argv)
    roots = [Path(r) for r in (a.root or [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]])]
    corpus = build(roots, a.passage_words, a.max_words)
    if not corpus:
        sys.exit(f"no prose docstrings found under {', '.join(map(str, roots))}; pass --root to a Python source tree")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from ldlm.checkpoint import write_text_atomic

    write_text_atomic(out, "\n".join(corpus) + "\n")  # a half-written corpus never replaces a good one
    n_words = sum(len(x.split()) for x in corpus)
    print(f"{out}: {len(corpus)} passages, {n_words} words, from {', '.join(map(str, roots))}")
    return corpus


if __name__ == "__main__":
    main()
