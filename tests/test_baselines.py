"""The AR and MDLM baselines: loss validity, cache exactness, parameter budgets, CLI end to end."""
import dataclasses
import json
import math
import os
import re

import pytest
import torch

from ldlm.algorithms import build
from ldlm.algorithms.ar import sample_tokens
from ldlm.blocks import count_params
from ldlm.cli import main
from ldlm.config import load_config
from ldlm.data import build_corpus

def stated_params(path: str) -> int:
    """The trainable-parameter count a config states in its header comment."""
    return int(re.search(r"([\d,]+) trainable parameters", open(path).read()).group(1).replace(",", ""))


# configs/tiny.yaml's own count is checked against the built LDLM in tests/test_model.py
LDLM_TINY_PARAMS = stated_params(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                              "configs", "tiny.yaml"))


def make(root, tok, algo, *overrides):
    torch.manual_seed(0)
    cfg = load_config(os.path.join(root, "configs", f"micro-{algo}.yaml"), list(overrides))
    return build(cfg, tok).eval()


def test_sample_tokens_temperature_top_p():
    g = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    draws = sample_tokens(logits, 1.0, 1.0, g)
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64), atol=0.015)
    # top-p 0.7 keeps the smallest prefix with >= 0.7 of the mass: tokens 0 and 1, renormalised
    freq = torch.bincount(sample_tokens(logits, 1.0, 0.7, g), minlength=4).double() / len(draws)
    assert freq[2:].sum() == 0 and abs(freq[0] - 0.5 / 0.8) < 0.015
    assert (sample_tokens(logits, 0.0, 1.0, g) == 0).all()  # temperature 0 = greedy
    assert (sample_tokens(logits, 1.0, 1e-6, g) == 0).all()  # top-p -> 0 = greedy


def test_tiny_configs_match_ldlm_budget(root, tok):
    for algo in ("ar", "mdlm"):
        path = os.path.join(root, "configs", f"tiny-{algo}.yaml")
        n = count_params(build(load_config(path), tok))
        assert n == stated_params(path), (algo, n)
        assert abs(n / LDLM_TINY_PARAMS - 1) < 0.10
    # the same training budget as the demo's LDLM: steps and batch (tiny-tencdm too)
    tiny = load_config(os.path.join(root, "configs", "tiny.yaml")).train
    for name in ("ar", "mdlm", "ar-nonemb", "mdlm-nonemb", "tencdm"):
        tc = load_config(os.path.join(root, "configs", f"tiny-{name}.yaml")).train
        assert (tc.steps, tc.batch_size, tc.grad_accum) == (tiny.steps, tiny.batch_size, tiny.grad_accum), name


def stated_count(path: str, what: str) -> int:
    """A count a config states in its header comment as '<n> <what>'."""
    return int(re.search(rf"([\d,]+) {what}", open(path).read()).group(1).replace(",", ""))


def test_param_counts_split_embedding_non_embedding_frozen(root, tok):
    from ldlm.trainer import setup_model

    model = setup_model(load_config(os.path.join(root, "configs", "tiny.yaml")), torch.device("cpu"))
    ldlm, V = model.param_counts(), len(tok)
    # LDLM: only the readout's vocabulary bias is embedding; the frozen MiniLM-L6 is all frozen
    assert ldlm["embedding"] == V and ldlm["trainable"] == LDLM_TINY_PARAMS
    assert ldlm["frozen"] == sum(p.numel() for p in model.frozen.parameters()) and 22e6 < ldlm["frozen"] < 23e6
    ar = build(load_config(os.path.join(root, "configs", "tiny-ar.yaml")), tok).param_counts()
    assert ar == {"embedding": V * 256, "non_embedding": 12558848 - V * 256, "frozen": 0, "trainable": 12558848}
    assert ar["non_embedding"] < 0.4 * ldlm["non_embedding"]  # "matched" in total, not in non-embedding


@pytest.mark.parametrize("algo", ["ar", "mdlm"])
def test_nonemb_configs_match_ldlm_non_embedding_size(root, tok, algo):
    from ldlm.trainer import setup_model

    ldlm = setup_model(load_config(os.path.join(root, "configs", "tiny.yaml")), torch.device("cpu")).param_counts()
    path = os.path.join(root, "configs", f"tiny-{algo}-nonemb.yaml")
    c = build(load_config(path), tok).param_counts()
    assert abs(c["non_embedding"] / ldlm["non_embedding"] - 1) < 0.05, (c, ldlm)
    # the counts its comment states are the built model's
    assert (stated_params(path), stated_count(path, "embedding"), stated_count(path, "non-embedding")) == \
        (c["trainable"], c["embedding"], c["non_embedding"])
    assert stated_count(path, "non-embedding trainable") == ldlm["non_embedding"]
    # the same data, length and training budget as the tiny baseline; only the depth differs
    base = load_config(os.path.join(root, "configs", f"tiny-{algo}.yaml")).to_dict()
    diff = {(s, k) for s in base if isinstance(base[s], dict) for k in base[s]
            if base[s][k] != load_config(path).to_dict()[s][k]}
    assert diff == {("model", "layers")}


def reference_attention(attn, x, causal):
    """Multi-head self-attention written out: softmax(QK^T / sqrt(d) + causal mask) V."""
    b, t, w = x.shape
    h = attn.heads
    q = attn.q(x).view(b, t, h, -1).transpose(1, 2)
    k, v = attn.kv(x).view(b, t, 2, h, -1).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
    return attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, w))


def test_causal_attention_is_sdpa_is_causal_without_a_mask_tensor(monkeypatch):
    from ldlm import blocks

    torch.manual_seed(0)
    attn = blocks.Attention(32, 4).eval()
    x = torch.randn(3, 11, 32)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        calls.append({"mask": kw.get("attn_mask"), "is_causal": kw.get("is_causal")})
        return sdpa(*args, **kw)

    monkeypatch.setattr(blocks.F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        y = attn(x, causal=True)
        assert torch.allclose(y, reference_attention(attn, x, causal=True), atol=1e-5)
        assert calls[-1] == {"mask": None, "is_causal": True}  # flash-eligible: no mask tensor
        assert not torch.allclose(y, reference_attention(attn, x, causal=False), atol=1e-3)
        # a cached prefill of t > 1 new positions after a prefix: the explicit, offset mask
        cache = blocks.KVCache(11)
        a = attn(x[:, :4], causal=True, cache=cache)
        bpart = attn(x[:, 4:], causal=True, cache=cache)
        assert calls[-1]["mask"] is not None and not calls[-1]["is_causal"]
        assert torch.allclose(torch.cat([a, bpart], 1), y, atol=1e-5)


def test_ar_kv_cache_equals_recompute(root, tok):
    model = make(root, tok, "ar")
    L = model.cfg.data.seq_len
    ids = torch.randint(1000, 2000, (3, L))
    full = model.net(ids, causal=True)
    caches = model.net.new_caches()
    inc, ptrs = [], set()
    for i in range(L):
        inc.append(model.net(ids[:, i:i + 1], causal=True, caches=caches, start=i))
        ptrs.add((caches[0].k.data_ptr(), caches[-1].v.data_ptr()))
    inc = torch.cat(inc, 1)
    assert torch.allclose(full, inc, atol=1e-5)
    assert torch.allclose(model.net.logits(full), model.net.logits(inc), atol=1e-4)
    # preallocated once ([B, heads, L, head_dim]) and written in place: the same buffers at every step
    heads = model.cfg.model.heads
    assert len(ptrs) == 1 and caches[0].k.shape == (3, heads, L, model.cfg.model.width // heads)
    sc = dataclasses.replace(model.cfg.sample, temperature=0.8, top_p=0.9)
    a = model.generate_ids(4, sc, torch.Generator().manual_seed(1), "cpu", kv_cache=True)
    b = model.generate_ids(4, sc, torch.Generator().manual_seed(1), "cpu", kv_cache=False)
    assert torch.equal(a, b) and (a[:, 0] == tok.cls_token_id).all()


@pytest.fixture(scope="module")
def micro_corpus(tok, tmp_path_factory):
    from conftest import ROOT

    cfg = load_config(os.path.join(ROOT, "configs", "micro-ar.yaml"), [f"data.cache_dir={tmp_path_factory.mktemp('c')}"])
    return build_corpus(cfg.data, tok, cfg.model.lm)


@pytest.mark.parametrize("algo", ["ar", "mdlm"])
def test_corpus_vocab_restricts_softmax_and_samples(root, tok, micro_corpus, algo):
    """`model.readout_vocab=corpus`, as LDLM's readout: logits over the training corpus's tokens and the
    specials only ([MASK] is an MDLM input, never an output); the loss is the CE of that softmax; samples
    never hold another token. With 'full', the same random model does emit others (the check has power)."""
    corpus_set = set(torch.unique(micro_corpus.train.ids).tolist())
    specials = {tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id}
    out = {}
    for vocab in ("corpus", "full"):
        model = make(root, tok, algo, f"model.readout_vocab={vocab}")
        model.prepare(micro_corpus, "cpu")
        allowed = set(model.net.vocab_ids().tolist())
        if vocab == "corpus":
            assert allowed == (corpus_set | specials) - {tok.mask_token_id}
            assert model.output_vocab_size() == len(allowed) < 0.3 * len(tok)
        else:
            assert allowed == set(range(len(tok))) - ({tok.mask_token_id} if algo == "mdlm" else set())
        assert tok.mask_token_id not in allowed or algo == "ar"
        sc = dataclasses.replace(model.cfg.sample, temperature=1.0, top_p=1.0, steps=8)
        out[vocab] = set(model.generate_ids(16, sc, torch.Generator().manual_seed(0), "cpu").flatten().tolist())
        # the training loss is the cross-entropy of the restricted softmax, computed here from the full
        # logits and global ids: -logit[target] + logsumexp over the allowed tokens
        batch = model.get_batch("train", torch.arange(8), "cpu")
        ids, mask = batch["ids"], batch["mask"]
        w_all = model.net.tok.weight
        keep = model.net.allowed
        with torch.no_grad():
            if algo == "ar":
                loss, _ = model.loss(batch, 0)
                h = model.net(ids[:, :-1], causal=True)[mask[:, 1:]]
                tgt = ids[:, 1:][mask[:, 1:]]
                weight = torch.ones(len(tgt))
            else:
                t = torch.full((8,), 0.5)
                total, n = model.nelbo(ids, mask, t, torch.Generator().manual_seed(3))
                loss = total / n
                x_t, masked = model.noise(ids, t, torch.Generator().manual_seed(3))
                h = model.net(x_t)[masked]
                tgt = ids[masked]
                weight = torch.full((len(tgt),), 2.0)  # 1/t
            logits = h @ w_all.t()
            ce = -logits.gather(1, tgt[:, None]).squeeze(1) + logits[:, keep].logsumexp(-1)
            ref = (weight * ce).sum() / (mask[:, 1:].sum() if algo == "mdlm" else len(tgt))
        assert torch.allclose(loss, ref, rtol=1e-4), (vocab, loss, ref)
        # near-uniform predictions at init: the loss is ~log of the output vocabulary's size
        if algo == "ar":
            assert abs(loss.item() - math.log(len(allowed))) < 0.05 * math.log(len(allowed))
    assert out["corpus"] <= corpus_set | specials
    assert len(out["full"] - corpus_set - specials) > 10


def test_baseline_checkpoint_without_vocab_buffer_loads_as_full_vocab(root, tok, micro_corpus):
    """Checkpoints written before the output vocabulary was a buffer were trained over every token."""
    from ldlm import checkpoint as ck

    model = make(root, tok, "mdlm")
    model.prepare(micro_corpus, "cpu")  # corpus vocabulary now
    old = {k: v for k, v in model.trainable_state().items() if k != "net.allowed"}
    fresh = make(root, tok, "mdlm")
    fresh.prepare(micro_corpus, "cpu")
    ck.load_into(fresh, old, fresh.trainable_state(), "test")
    assert fresh.output_vocab_size() == len(tok) - 1 and not fresh.net.allowed[tok.mask_token_id]
    with pytest.raises(Exception, match="does not fit"):  # any other missing tensor is still an error
        ck.load_into(fresh, {k: v for k, v in old.items() if k != "net.pos"}, fresh.trainable_state(), "test")


def test_mdlm_loss_finite_at_all_t_and_unbiased_at_init(root, tok):
    model = make(root, tok, "mdlm")
    L, V = model.cfg.data.seq_len, model.vocab_size
    ids = torch.randint(1000, 2000, (8, L))
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        for t in (1e-6, 1e-3, 0.3, 0.999999, 1.0):
            total, n = model.nelbo(ids, mask, torch.full((8,), t), torch.Generator().manual_seed(0))
            assert torch.isfinite(total) and total >= 0, t
        # at t = 1 every token after [CLS] is masked with weight 1: the NELBO is the plain CE
        x1, masked = model.noise(ids, torch.ones(8))
        assert masked[:, 1:].all() and not masked[:, 0].any() and (x1[:, 1:] == tok.mask_token_id).all()
        # near-uniform predictions at init: E_t[(1/t) * #masked] = L - 1, so the bound is ~log V per token
        g = torch.Generator().manual_seed(0)
        est = sum(model.evaluate({"ids": ids.repeat(8, 1), "mask": mask.repeat(8, 1)}, g)["nelbo"] for _ in range(4))
        assert abs(est / 4 - math.log(V)) < 0.05 * math.log(V)


@pytest.mark.parametrize("algo,vocab,drop", [("ar", "full", 2.0), ("mdlm", "full", 2.0), ("ar", "corpus", 0.8),
                                             ("mdlm", "corpus", 0.8)])
def test_loss_decreases_on_micro_corpus(root, tok, algo, vocab, drop, tmp_path):
    """From ~log V at init (10.3 nats over all tokens, ~7.6 over the micro corpus's): learning the
    corpus's vocabulary alone is worth ~2.7 nats under 'full', which 'corpus' gives for free
    (measured drops: full 3.4 AR / 4.2 MDLM, corpus 1.3 / 1.7)."""
    model = make(root, tok, algo, f"data.cache_dir={tmp_path}", f"model.readout_vocab={vocab}")
    cfg = model.cfg
    model.prepare(build_corpus(cfg.data, tok, cfg.model.lm), "cpu")
    valid = model.get_batch("valid", torch.arange(len(model.splits["valid"])), "cpu")
    before = model.evaluate(valid, torch.Generator().manual_seed(0))["loss"]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for step in range(20):
        idx = torch.randint(len(model.splits["train"]), (16,), generator=g)
        loss, logs = model.loss(model.get_batch("train", idx, "cpu"), step)
        assert math.isfinite(logs["loss"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = model.evaluate(valid, torch.Generator().manual_seed(0))["loss"]
    assert after < before - drop, (before, after)


def test_mdlm_cached_sampler_equals_uncached(root, tok):
    model = make(root, tok, "mdlm")
    L = model.cfg.data.seq_len
    for steps, temperature, top_p in ((2 * L, 0.8, 0.9), (5, 1.0, 1.0)):
        out, rows = {}, {}
        for cache in (True, False):
            sc = dataclasses.replace(model.cfg.sample, steps=steps, temperature=temperature, top_p=top_p,
                                     cache=cache)
            out[cache] = model.generate_ids(4, sc, torch.Generator().manual_seed(2), "cpu")
            rows[cache] = model.rows_computed
        assert torch.equal(out[True], out[False])
        assert (out[True] != tok.mask_token_id).all() and (out[True][:, 0] == tok.cls_token_id).all()
        assert rows[False] == 4 * steps
        if steps > L:  # more steps than tokens: many steps change nothing in a row, and are skipped
            assert rows[True] < 0.8 * rows[False]


@pytest.mark.parametrize("algo", ["ar", "mdlm"])
def test_cli_train_sample(root, tmp_path, capsys, algo):
    out, samples = tmp_path / "run", tmp_path / "samples.jsonl"
    assert main(["train", "--config", f"{root}/configs/micro-{algo}.yaml", "--out", str(out), "--quiet",
                 f"data.cache_dir={tmp_path / 'cache'}", "train.steps=10", "train.ema=0.5"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in lines if r.get("split") == "valid"][-1]
    assert {"nll": "ar", "nelbo": "mdlm"}.keys() & valid.keys() and math.isfinite(valid["loss"])
    train_lines = [r for r in lines if "loss" in r and r.get("split") != "valid"]
    assert train_lines and all(math.isfinite(r["loss"]) for r in train_lines)
    if algo == "ar":  # its accuracy, computed on the logged steps only
        assert all(0 <= r["acc"] <= 1 for r in train_lines)
    start = lines[0]
    assert start["algo"] == algo and start["trainable_params"] == start["params"]["trainable"]
    assert start["params"]["embedding"] == 30522 * 64 and start["params"]["frozen"] == 0
    assert 1000 < start["output_vocab"] < 30522 / 4  # the micro corpus's tokens, not all of them
    steps = ["--steps", "8"] if algo == "mdlm" else []  # AR has no steps: the flag would be an error
    assert main(["sample", "--ckpt", str(out), "--num", "5", *steps, "--seed", "1", "--top-p", "0.9",
                 "--out", str(samples)]) == 0
    recs = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(recs) == 5 and all(r["algo"] == algo and r["top_p"] == 0.9 for r in recs)
    L = 32
    assert all(isinstance(r["text"], str) and len(r["tokens"]) <= L - 1 for r in recs)
    assert all(103 not in r["tokens"] and 0 not in r["tokens"] for r in recs)  # no [MASK] left, cut at [PAD]
