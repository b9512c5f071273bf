"""Conditional generation: prompts, suffixes and infilling for LDLM, TEncDM, MDLM and AR, the
`ldlm sample` options, bad input, and the conditional evaluation protocol (`ldlm-cond-v1`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ldlm import conditioning as C
from ldlm.algorithms import build
from ldlm.cli import main
from ldlm.config import load_config
from ldlm.errors import UserError
from ldlm.frozen_lm import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
L = 32  # the micro configs' seq_len


def make(tok, algo, *overrides):
    torch.manual_seed(0)
    name = "micro.yaml" if algo == "ldlm" else f"micro-{algo}.yaml"
    return build(load_config(str(ROOT / "configs" / name), list(overrides)), tok).eval()


def sc_for(model, **kw):
    from ldlm.generate import sample_settings

    steps = {} if model.cfg.algo == "ar" else {"steps": 4}  # AR's sampler has no steps: the flag is an error
    return sample_settings(model, **{**steps, **kw})


# ---------------------------------------------------------------- the row and the records
def test_layout_places_prompt_suffix_and_gap(tok):
    p, s = tok("to be or not", add_special_tokens=False)["input_ids"], tok("the question", add_special_tokens=False)["input_ids"]
    conds = [C.Condition(p, []), C.Condition(p, s), C.Condition([], s), C.Condition(p, s, gap=3)]
    g = C.layout(tok, conds, L)
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    # a prompt: [CLS] prompt, the rest free
    assert g.ids[0, : 1 + len(p)].tolist() == [cls] + p and g.mask[0].sum() == 1 + len(p)
    # prompt + suffix: the suffix and [SEP] end the row
    assert g.ids[1, L - len(s) - 1:].tolist() == s + [sep] and g.mask[1].sum() == 2 + len(p) + len(s)
    assert not g.mask[1, 1 + len(p): L - len(s) - 1].any()
    # suffix alone: [CLS] given, then everything free up to the suffix
    assert g.mask[2, 0] and not g.mask[2, 1: L - len(s) - 1].any()
    # a gap of 3: the suffix 3 tokens after the prompt, the rest of the row given [PAD]
    a = 1 + len(p)
    assert not g.mask[3, a: a + 3].any() and g.ids[3, a + 3: a + 3 + len(s) + 1].tolist() == s + [sep]
    assert g.mask[3, a + 3:].all() and (g.ids[3, a + 4 + len(s):] == pad).all()


def test_records_keep_the_given_text_verbatim(tok):
    conds = C.make_conditions(tok, ["Hello, World", "to be"], ["the END.", None])
    g = C.layout(tok, conds, L)
    ids = g.ids.clone()
    w = tok("my gentle lord", add_special_tokens=False)["input_ids"]
    ids[0, 4: 4 + len(w)] = torch.tensor(w)  # row 0: in the gap, [PAD]s and a [SEP] mean 'shorter'
    ids[0, 4 + len(w)] = tok.sep_token_id
    ids[1, 3: 3 + len(w)] = torch.tensor(w)  # row 1: a continuation, cut at its [SEP]
    ids[1, 3 + len(w)] = tok.sep_token_id
    ids[1, 4 + len(w)] = w[0]
    recs = C.records(tok, conds, g, ids)
    assert recs[0]["prompt"] == "hello, world" and recs[0]["suffix"] == "the end."  # the round trip: uncased
    assert recs[0]["written"] == "my gentle lord" and recs[0]["text"] == "hello, world my gentle lord the end."
    assert recs[1]["text"] == "to be my gentle lord" and recs[1]["suffix"] == ""
    for r in recs:
        assert r["text"].startswith(r["prompt"]) and r["text"].endswith(r["suffix"])


def test_prompts_cut_from_passages_keep_the_truth(tok):
    passages = ["The quality of mercy is not strained; it droppeth as the gentle rain from heaven upon the place beneath",
                "Now is the winter of our discontent made glorious summer by this sun of York"]
    for infill in (False, True):
        conds, skipped = C.conditions_from_passages(tok, passages, L, None, infill)
        assert skipped == 0 and len(conds) == 2
        g = C.layout(tok, conds, L)
        true_ids = g.ids.clone()
        for i, c in enumerate(conds):  # put the truth in the hidden part: the records give back the passage
            a = 1 + len(c.prompt)
            true_ids[i, a: a + len(c.reference)] = torch.tensor(c.reference)
            if not c.suffix:
                true_ids[i, a + len(c.reference)] = tok.sep_token_id
        for r, p in zip(C.records(tok, conds, g, true_ids), passages):
            assert r["text"] == r["reference_text"]
            assert r["written"] == r["reference"] and not r["written"].startswith("##")  # cut at word starts
            assert r["text"].replace(" ", "")[:20] == p.lower().replace(" ", "")[:20]
        if infill:
            n = [len(c.prompt) + len(c.reference) + len(c.suffix) for c in conds]
            assert all(abs(len(c.reference) - k / 3) <= 2 for c, k in zip(conds, n))
    conds, _ = C.conditions_from_passages(tok, passages, L, 5)
    assert [len(c.prompt) for c in conds] == [5, 5]


@pytest.mark.parametrize("bad, fragment", [
    ({"prompts": ["word " * 40]}, "leaves no room to write; shorten to at most 30 tokens"),
    ({"prompts": ["to be"], "suffixes": ["word " * 29]}, "leaves no room"),
    ({"prompts": ["\u200b\u200b"]}, "tokenises to nothing"),
    ({"prompts": [None], "suffixes": [None]}, "neither a prompt nor a suffix"),
    ({"prompts": ["a", "b"], "suffixes": ["c", "d", "e"]}, "one suffix per prompt"),
    ({"prompts": ["to be"], "gap": 2}, "--gap places the suffix"),
    ({"prompts": ["to be"], "suffixes": ["the end"], "gap": 40}, "--gap 40 does not fit"),
])
def test_bad_conditions_are_one_line_errors(tok, bad, fragment):
    with pytest.raises(UserError) as e:
        C.layout(tok, C.make_conditions(tok, bad["prompts"], bad.get("suffixes"), bad.get("gap")), L)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the models keep what is given
def given_for(tok, n=3):
    conds = C.make_conditions(tok, ["to be or not to be", "my lord", None], [None, "the end of it", "farewell"])
    return C.layout(tok, conds[:n], L)


def test_mdlm_never_masks_given_tokens(tok):
    model = make(tok, "mdlm")
    g = given_for(tok)
    ids = model.generate_ids(3, sc_for(model), torch.Generator().manual_seed(0), "cpu", given=g)
    assert torch.equal(ids[g.mask], g.ids[g.mask])
    assert (ids != model.mask_id).all()


def test_ar_continues_its_prompt(tok):
    model = make(tok, "ar")
    g = given_for(tok, 1)
    sc = sc_for(model, temperature=0.0)
    a = model.generate_ids(1, sc, torch.Generator().manual_seed(0), "cpu", given=g)
    b = model.generate_ids(1, sc, torch.Generator().manual_seed(0), "cpu", kv_cache=False, given=g)
    assert torch.equal(a, b) and torch.equal(a[g.mask], g.ids[g.mask])
    # greedy: the first written token is the network's argmax after the prompt
    p = int(g.mask[0].sum())
    h = model.net(g.ids[:, :p], causal=True)
    assert a[0, p] == model.net.logits(h[:, -1]).argmax(-1)[0]
    with pytest.raises(UserError, match="cannot take a suffix"):
        from ldlm.generate import generate
        generate(model, prompts=["to be"], suffixes=["the end"])


@pytest.mark.parametrize("algo", ["ldlm", "tencdm"])
def test_latent_models_clamp_given_latents_and_keep_given_tokens(tok, algo):
    model = make(tok, algo)
    g = given_for(tok)
    window = model.latent_window()
    assert window == (4 if algo == "ldlm" else 1)
    z_given, glat = model.condition_latents(g)
    # a latent is clamped only if its whole window is given: row 0's prompt is 7 positions with [CLS]
    p = int(g.mask[0].sum())
    assert glat[0].tolist() == [(k + 1) * window <= p for k in range(glat.shape[1])]
    seen = []
    from ldlm.denoiser import ClampedDenoiser

    clamped = ClampedDenoiser(model.denoiser, z_given, glat, guidance=1.5)
    z = torch.randn(z_given.shape)
    out = clamped(z, torch.full((3,), 0.5))
    assert torch.equal(out[glat], z_given[glat])
    seen.append(out)
    ids = model.generate_ids(3, sc_for(model), torch.Generator().manual_seed(0), "cpu", given=g)
    assert torch.equal(ids[g.mask], g.ids[g.mask])


def test_given_latents_come_from_the_given_tokens_alone(tok):
    """No leak: the clamped latents of a prefix do not depend on the hidden tokens after it."""
    model = make(tok, "ldlm")
    ids = tok(["to be or not to be, that is the question whether", "to be or not to be, a fool and a knave"],
              padding="max_length", max_length=L, return_tensors="pt")["input_ids"]
    assert torch.equal(ids[0, :8], ids[1, :8]) and not torch.equal(ids[0, 8:], ids[1, 8:])
    m = torch.zeros_like(ids, dtype=torch.bool)
    m[:, :8] = True
    z, glat = model.condition_latents(C.Given(ids, m))  # the hidden tokens are there, but not given
    assert glat[:, :2].all() and not glat[:, 2:].any()
    assert torch.allclose(z[0], z[1], atol=1e-5)


def test_unconditional_path_is_unchanged(tok):
    model = make(tok, "ldlm", "recipe.cond_prob=0")
    z, t = torch.randn(2, 8, 16), torch.rand(2)
    nothing, some = torch.zeros(2, 8, dtype=torch.bool), torch.zeros(2, 8, dtype=torch.bool)
    some[:, :3] = True
    assert torch.equal(model.denoiser(z, t), model.denoiser(z, t, None, nothing))
    assert not torch.allclose(model.denoiser(z, t), model.denoiser(z, t, None, some))  # the flag is seen
    # the flag is a fixed buffer, not state: checkpoints and parameter counts are the unconditional model's
    assert not any("given" in k for k in model.state_dict())
    state = torch.get_rng_state()
    assert model.training_condition(torch.zeros(4, L, dtype=torch.long), torch.ones(4, L, dtype=torch.bool)) is None
    assert torch.equal(state, torch.get_rng_state())  # cond_prob = 0 draws nothing: old runs reproduce


def test_training_conditions_and_loss_skip_given_latents(tok, micro_cfg):
    model = build(micro_cfg("recipe.cond_prob=1.0"), tok).train()
    texts = ["now is the winter of our discontent made glorious summer by this sun of york and all the clouds"] * 6
    enc = tok(texts, padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    torch.manual_seed(0)
    g = model.training_condition(ids, mask)
    n = int(mask[0].sum())
    kinds = set()
    for row in g.mask.tolist():
        assert row[0] and not all(row[:n])  # [CLS] given, something left to write
        free = [j for j in range(L) if not row[j]]
        assert free == list(range(free[0], free[-1] + 1))  # one gap: prefix / suffix / both
        kinds.add((row[1], row[L - 1]))
    assert kinds == {(True, False), (False, True), (True, True)}
    assert torch.equal(g.ids[g.mask], ids[g.mask])
    # L_diff ignores the given latents: no gradient reaches z0 there
    z0 = torch.randn(6, 8, 16, requires_grad=True)
    cond = model.conditioned(z0, g)
    loss, _ = model.diffusion_loss(z0, 1.0, cond)
    loss.backward()
    assert (z0.grad[cond[1]] == 0).all() and (z0.grad[~cond[1]] != 0).any()


def test_conditional_training_teaches_the_denoiser_to_use_given_latents(tok, micro_cfg):
    """A toy latent space where the second half mirrors the first: trained with given first halves (half the
    rows, the rest unconditional), the denoiser recovers the second half from a clamped first half at
    alpha = 0.3; trained without conditions, clamping alone does not."""
    from ldlm.denoiser import ClampedDenoiser

    B, N, d = 32, 8, 16

    def mirrored():
        a = torch.randn(B, N // 2, d)
        return torch.cat([a, a.flip(1)], 1)

    errors = {}
    for conditional in (True, False):
        torch.manual_seed(0)
        model = build(micro_cfg("recipe.timesteps=uniform"), tok)
        opt = torch.optim.AdamW(model.denoiser.parameters(), lr=3e-3)
        given = torch.zeros(B, N, dtype=torch.bool)
        given[: B // 2, : N // 2] = True
        for _ in range(500):
            z0 = mirrored()
            loss, _ = model.diffusion_loss(z0, 1.0, (z0, given) if conditional else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            z0 = mirrored()
            g = torch.zeros(B, N, dtype=torch.bool)
            g[:, : N // 2] = True
            t = model.schedule.t_at_alpha([0.3]).expand(B).float()
            z_t = model.schedule.noise(z0, t)
            for name, den in (("free", model.denoiser), ("clamped", ClampedDenoiser(model.denoiser, z0, g))):
                errors[conditional, name] = ((den(z_t, t, den(z_t, t)) - z0)[:, N // 2:] ** 2).mean().item()
    assert errors[True, "clamped"] < 0.2 * errors[True, "free"]
    assert errors[True, "clamped"] < 0.2 * errors[False, "clamped"]
    assert errors[False, "clamped"] > 0.7 * errors[False, "free"]


# ---------------------------------------------------------------- API and CLI end to end
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cond")
    os.environ["LDLM_QUIET"] = "1"
    out = {}
    for algo, cfg in (("ldlm", "micro.yaml"), ("mdlm", "micro-mdlm.yaml"), ("ar", "micro-ar.yaml"),
                      ("tencdm", "micro-tencdm.yaml")):
        assert main(["train", "--config", str(ROOT / "configs" / cfg), "--out", str(d / algo), "--quiet",
                     "train.steps=2", "train.batch_size=4", "train.eval_every=0", "train.threads=2",
                     f"data.cache_dir={d / 'cache'}", "data.max_passages=60"]) == 0
        out[algo] = d / algo
    return out


def test_generate_api_records(runs):
    from ldlm.generate import generate, load_model

    model = load_model(runs["ldlm"])
    recs = generate(model, prompts=["to be or not to be", "my lord"], suffixes=["the question", None],
                    num=3, steps=3, guidance=1.0)
    assert [r["prompt"] for r in recs] == ["to be or not to be", "my lord", "to be or not to be"]  # cycled
    assert recs[0]["suffix"] == "the question" and recs[1]["suffix"] == ""
    for r in recs:
        assert r["text"].startswith(r["prompt"]) and r["text"].endswith(r["suffix"]) and r["guidance"] == 1.0


def test_cli_sample_conditional(runs, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "good morrow"}) + "\n" + json.dumps({"prompt": "alas", "suffix": "poor yorick"}) + "\n")
    out = tmp_path / "s.jsonl"
    for algo in ("ldlm", "mdlm"):
        assert main(["sample", "--ckpt", str(runs[algo]), "--prompts", str(prompts), "--steps", "3", "--out", str(out)]) == 0
        recs = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["prompt"] for r in recs] == ["good morrow", "alas"] and recs[1]["text"].endswith("poor yorick")
        assert "[" in capsys.readouterr().out  # the written part is bracketed in the printout
    assert main(["sample", "--ckpt", str(runs["ar"]), "--from", "valid", "--cond-tokens", "4", "--num", "3",
                 "--out", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 3 and all(len(r["tokens"]) >= 4 and r["reference"] for r in recs)
    assert recs[0]["condition"]["mode"] == "prefix"
    assert main(["sample", "--ckpt", str(runs["mdlm"]), "--from", "valid", "--infill", "--num", "2", "--steps", "3",
                 "--out", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["suffix"] and r["text"].endswith(r["suffix"]) for r in recs)


@pytest.mark.parametrize("argv, fragment", [
    (["--prompt", "word " * 40], "leaves no room to write"),
    (["--prompt", "  "], "--prompt is empty"),
    (["--prompt", "\u200b"], "tokenises to nothing"),
    (["--prompts", "EMPTY"], "is empty; put one prompt per line"),
    (["--prompts", "BADJSON"], "has no 'prompt' or 'suffix' string"),
    (["--prompt", "to be", "--suffix", "the end", "AR"], "cannot take a suffix"),
    (["--cond-tokens", "3"], "add --from FILE"),
    (["--from", "valid", "--cond-tokens", "500"], "none of the"),
    (["--prompt", "to be", "--guidance", "-1"], "--guidance must be >= 0"),
])
def test_cli_bad_conditional_input(runs, tmp_path, capsys, argv, fragment):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    argv = [{"EMPTY": str(tmp_path / "empty.txt"), "BADJSON": str(tmp_path / "bad.jsonl")}.get(a, a) for a in argv]
    ckpt = runs["ar"] if "AR" in argv else runs["ldlm"]
    argv = [a for a in argv if a != "AR"]
    out = tmp_path / "s.jsonl"
    out.write_text("keep me\n")
    capsys.readouterr()
    steps = [] if ckpt == runs["ar"] else ["--steps", "2"]
    rc = main(["sample", "--ckpt", str(ckpt), *steps, "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and fragment in err and len(err.splitlines()) == 1, err
    assert out.read_text() == "keep me\n"  # nothing written


# ---------------------------------------------------------------- the conditional protocol
def test_pieces_and_derangement():
    from ldlm.cond_eval import derangement, pieces

    rec = {"text": "to be or not, that is the question", "prompt": "to be", "suffix": "the question"}
    assert pieces(rec) == ("to be", " or not, that is", " the question")
    assert pieces({"text": "to be.", "prompt": "to be", "suffix": ""}) == ("to be", ".", "")
    with pytest.raises(UserError, match="does not start with its 'prompt'"):
        pieces({"text": "not it", "prompt": "to be", "suffix": ""})
    for n in (2, 3, 10):
        p = derangement(n, 0)
        assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))


def test_score_given_is_the_conditional_nll(random_lm):
    """NLL(target | context) from one pass = NLL(context + target) - NLL(context)."""
    from ldlm.evaluator import Evaluator

    ev = Evaluator(random_lm, bf16=False, batch_size=3)
    ctx, tgt = ev.encode(["To be, or not to be", "Friends, Romans", ""]), ev.encode([" that is the question", " lend me", "Alas"])
    given = ev.score_ids(ctx, tgt)
    whole, alone = ev.score_ids([[]] * 3, [c + t for c, t in zip(ctx, tgt)]), ev.score_ids([[]] * 3, ctx)
    assert given.n_scored == [len(t) for t in tgt]
    assert given.nll == pytest.approx([w - a for w, a in zip(whole.nll, alone.nll)], rel=1e-4, abs=1e-4)
    assert ev.score(["Alas"]).nll[0] == pytest.approx(given.nll[2], rel=1e-5)


def test_cond_eval_cli_on_sampled_file(runs, random_lm, tmp_path, capsys):
    s = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(runs["mdlm"]), "--from", "valid", "--infill", "--num", "6", "--steps", "3",
                 "--out", str(s)]) == 0
    out = tmp_path / "e.json"
    assert main(["eval", str(s), "--eval-lm", random_lm, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["protocol"] == "ldlm-cond-v1" and set(r["rows"]) == {"samples", "data"}
    for row in r["rows"].values():
        assert row["gen_ppl"] > 1 and row["suffix_ppl"] > 1 and row["swap"] is not None and row["num"] == 6
    assert "at least 32" in r["rows"]["samples"]["unavailable"]["mauve"]
    assert "themselves" in r["rows"]["data"]["unavailable"]["mauve"]
    assert "sfx-PPL" in capsys.readouterr().out
    # the prefix MAUVE is the unconditional protocol's: refused here, in one line, before anything is written
    out.unlink()
    assert main(["eval", str(s), "--eval-lm", random_lm, "--mauve-prefix-words", "5", "--out", str(out)]) != 0
    assert "--mauve-prefix-words does not apply" in capsys.readouterr().err and not out.exists()


def test_smollm2_swap_test_sees_real_conditioning():
    """On real held-out text the true continuations score far better under their own prompt (swap < 0);
    continuations taken from other passages (a model that ignores its prompt) score about the same."""
    from ldlm.cond_eval import CondEvaluation
    from ldlm.data import load_passages, split_passages
    from ldlm.evaluator import load_evaluator

    passages = split_passages(load_passages("shakespeare", 40), 0.02, 0)[1][:24]
    tok = load_tokenizer("minilm")
    conds, _ = C.conditions_from_passages(tok, passages, 64)
    g = C.layout(tok, conds, 64)
    truth = g.ids.clone()
    for i, c in enumerate(conds):
        truth[i, 1 + len(c.prompt): 1 + len(c.prompt) + len(c.reference)] = torch.tensor(c.reference)
    recs = C.records(tok, conds, g, truth)
    ignoring = [dict(r, text=r["prompt"] + " " + recs[(i + 5) % len(recs)]["reference"]) for i, r in enumerate(recs)]
    lm = load_evaluator("smollm2")
    rows = CondEvaluation(lm).rows({"ignores prompt": ignoring})
    assert rows["data"]["swap"] < -0.3 and rows["data"]["swap"] + 3 * rows["data"]["swap_se"] < 0
    assert abs(rows["ignores prompt"]["swap"]) < 0.5 * abs(rows["data"]["swap"])


def test_conditional_bench_script(runs, random_lm, tmp_path):
    """bench/conditional.py: every model on the same prompts, prefix and infill rows beside the data, examples."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import conditional

    res = conditional.main(["--ldlm", str(runs["ldlm"]), "--tencdm", str(runs["tencdm"]), "--mdlm", str(runs["mdlm"]),
                            "--ar", str(runs["ar"]), "--num", "4", "--steps", "2", "--threads", "1",
                            "--eval-lm", random_lm, "--out", str(tmp_path)])
    assert set(res["rows"]["prefix"]) == {"ldlm", "tencdm", "mdlm", "ar", "data"}
    assert set(res["rows"]["infill"]) == {"ldlm", "tencdm", "mdlm", "data"}  # AR cannot take a suffix
    assert all(r["num"] == 4 and r["gen_ppl"] > 1 for rows in res["rows"].values() for r in rows.values())
    assert [e["prompt"] for e in res["examples"]] == [p for p, _ in conditional.EXAMPLES]
    assert "ar" not in res["examples"][-1]["written"] and res["examples"][-1]["written"]["mdlm"].endswith("and so farewell.")
    md = (tmp_path / "conditional.md").read_text()
    assert "## Infilling (middle third hidden)" in md and "| ar |" in md and (tmp_path / "conditional.json").is_file()


def test_conditional_bench_protocol_check(random_lm, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import conditional

    res = conditional.main(["--protocol-check", "--num", "6", "--threads", "1", "--eval-lm", random_lm,
                            "--out", str(tmp_path)])
    for mode in ("prefix", "infill"):
        rows = res["rows"][mode]
        assert set(rows) == {"ignores its prompt", "data"} and rows["data"]["num"] == 6
        # the same middles, so the same tokens: only the context differs
        assert rows["data"]["tokens_scored"] == rows["ignores its prompt"]["tokens_scored"]
    assert res["rows"]["infill"]["data"]["swap_right"] is not None
    assert "## infill" in (tmp_path / "conditional-protocol.md").read_text()
