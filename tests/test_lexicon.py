"""The lexicon-constrained readout (`sample.lexicon_beam`): the training split's words, and a beam search that writes
only those words from the same per-position scores."""
import itertools
import json

import pytest
import torch

from ldlm.errors import UserError
from ldlm.lexicon import Lexicon

# a toy vocabulary: 0 [PAD], 1 [CLS], 2 [SEP], 3 [UNK]; words start with 4..7, continue with "##" pieces 8..10
PAD, CLS, SEP, UNK = 0, 1, 2, 3
V = 11
CONT = torch.zeros(V, dtype=torch.bool)
CONT[8:] = True
SPECIALS, ENDS = (PAD, CLS, SEP, UNK), (SEP, PAD)


def toy_lexicon(rows):
    ids = torch.tensor([r + [PAD] * (10 - len(r)) for r in rows])
    mask = ids != PAD
    return Lexicon.from_ids(ids, mask, lambda x: x, CONT, SPECIALS, ENDS, PAD)


def words_of(seq) -> list[tuple[int, ...]] | None:
    """The words a token sequence (after [CLS]) spells, up to its end token; None if a piece continues nothing."""
    words, word = [], []
    for t in seq:
        if t in (SEP, PAD):
            break
        if CONT[t]:
            if not word:
                return None
            word.append(t)
        else:
            if word:
                words.append(tuple(word))
            word = [t]
    if word:
        words.append(tuple(word))
    return words


def allowed(seq, vocab) -> bool:
    w = words_of(seq)
    return w is not None and all(x in vocab for x in w)


LEX_ROWS = [[CLS, 4, 8, 5, 6, 9, 10, SEP], [CLS, 7, 5, 8, SEP], [CLS, 6, 9, 4, 8, 9, 7, 6, 10, SEP],  # cut at L = 10
            [CLS, 8, 7, SEP]]  # an orphan piece after [CLS]: no word
VOCAB = {(4, 8), (5,), (6, 9, 10), (7,), (5, 8), (6, 9), (4, 8, 9)}


def test_the_words_are_the_training_splits_whole_words():
    lex = toy_lexicon(LEX_ROWS)
    # row 3 fills all 10 positions (the tokenizer cut it): its last word ("6 ##10") is left out; so is row 4's "##8"
    assert lex.num_words == len(VOCAB)
    for word in VOCAB:  # walk the trie: each word ends on a terminal node
        node = int(lex.start_node[word[0]])
        for t in word[1:]:
            row = lex.child_tok[node].tolist()
            node = int(lex.child_node[node, row.index(t)])
        assert bool(lex.terminal[node])
    assert int(lex.start_node[8]) == -1 and int(lex.start_node[UNK]) == -1  # no word starts with a piece or [UNK]
    assert not bool(lex.terminal[int(lex.start_node[6])])  # "6" alone is not a word, only "6 9" and "6 9 10"


def valid(seq) -> bool:
    """What the decoder may write after [CLS]: lexicon words, then (optionally) an end token and only [PAD] after it."""
    stop = next((i for i, t in enumerate(seq) if t in ENDS), len(seq))
    return allowed(seq, VOCAB) and all(t == PAD for t in seq[stop + 1:])


def valid_but_the_cut(seq) -> bool:
    """`valid`, where a row that never ends may stop inside its last word (as a passage cut at L does)."""
    if valid(seq) or any(t in ENDS for t in seq):
        return valid(seq)
    start = max(i for i, t in enumerate(seq) if not CONT[t])
    return valid(seq[:start]) and any(w[: len(seq) - start] == tuple(seq[start:]) for w in VOCAB)


def score_of(logp, seq) -> float:
    """The summed log-probabilities of positions 1.. up to and including the first end token."""
    stop = next((i for i, t in enumerate(seq) if t in ENDS), len(seq) - 1)
    return sum(float(logp[i + 1, t]) for i, t in enumerate(seq[: stop + 1]))


def test_the_beam_finds_the_best_sequence_the_lexicon_allows():
    lex = toy_lexicon(LEX_ROWS)
    torch.manual_seed(0)
    L = 5
    for trial in range(6):
        logp = torch.log_softmax(torch.randn(1, L, V) * 3, -1)
        got = lex.decode(logp, beam=64)[0].tolist()
        assert got[0] == int(logp[0, 0].argmax())  # the [CLS] slot is the readout's own
        assert valid(got[1:])
        best = max(score_of(logp[0], seq) for seq in itertools.product(range(V), repeat=L - 1) if valid(seq))
        assert score_of(logp[0], got[1:]) == pytest.approx(best, abs=1e-4), trial
        narrow = lex.decode(logp, beam=1)[0].tolist()  # a beam of one is greedy: allowed, not always the best
        assert valid_but_the_cut(narrow[1:]) and score_of(logp[0], narrow[1:]) <= best + 1e-4


def test_an_allowed_argmax_is_kept_and_a_non_word_is_mended():
    lex = toy_lexicon(LEX_ROWS)
    logp = torch.full((2, 6, V), -20.0)
    for b, seq in enumerate([[CLS, 6, 9, 10, 7, SEP], [CLS, 5, 10, 7, SEP, PAD]]):  # row 1: "5 ##10" is no word
        for i, t in enumerate(seq):
            logp[b, i, t] = 0.0
    logp[1, 2, 8] = -1.0  # the best piece that does continue "5"
    logp[1, 2, 4] = -2.0
    out = lex.decode(torch.log_softmax(logp, -1), beam=4)
    assert out[0].tolist() == [CLS, 6, 9, 10, 7, SEP]
    assert out[1].tolist() == [CLS, 5, 8, 7, SEP, PAD]  # "5 ##8" (a word) before "5 4 ..." (a new word)


def test_after_the_end_token_only_padding_follows():
    lex = toy_lexicon(LEX_ROWS)
    logp = torch.log_softmax(torch.randn(3, 6, V), -1)
    logp[:, 2, SEP] = 5.0  # the end, early
    out = lex.decode(torch.log_softmax(logp, -1), beam=8)
    for row in out.tolist():
        if SEP in row[1:]:
            assert all(t == PAD for t in row[row.index(SEP, 1) + 1:])


def test_sampling_is_seeded_and_stays_in_the_lexicon():
    lex = toy_lexicon(LEX_ROWS)
    logp = torch.log_softmax(torch.randn(16, 7, V), -1)
    a = lex.decode(logp, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = lex.decode(logp, temperature=1.0, generator=torch.Generator().manual_seed(3))
    c = lex.decode(logp, temperature=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(valid_but_the_cut(row[1:]) for row in a.tolist())


def test_forced_tokens_are_written_even_where_the_lexicon_has_no_word():
    lex = toy_lexicon(LEX_ROWS)
    logp = torch.log_softmax(torch.randn(2, 6, V), -1)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    want = torch.zeros(2, 6, dtype=torch.long)
    mask[:, 1:3] = True
    want[0, 1:3] = torch.tensor([4, 8])  # a word of the lexicon
    want[1, 1:3] = torch.tensor([7, 10])  # "7 ##10": none
    out = lex.decode(logp, beam=4, forced=(mask, want))
    assert out[:, 1:3].tolist() == [[4, 8], [7, 10]]
    assert allowed(out[0, 1:].tolist(), VOCAB)
    assert allowed(out[1, 3:].tolist(), VOCAB) or out[1, 3] in (8, 9, 10)  # goes on from the prompt


def walk(model, lex, tokens) -> tuple[int, int]:
    """(how many of a sample's tokens the lexicon would not have allowed where they stand, the state it ends in)."""
    node, bad = 0, 0
    for t in model.output_vocab().to_local(torch.tensor(tokens, dtype=torch.long)).tolist():
        bad += not bool(lex.allowed(torch.tensor([node]))[0, t])
        node = int(lex.advance(torch.tensor([node]), torch.tensor([t]))[0])
    return bad, node


def violations(model, lex, records) -> int:
    return sum(walk(model, lex, r["tokens"])[0] for r in records)


def test_ldlm_samples_with_the_lexicon_spell_only_training_words(tmp_path):
    from tests.conftest import train_micro_run

    from ldlm.generate import generate, load_model

    run = train_micro_run(tmp_path)
    model = load_model(str(run), device="cpu")
    lex = model.lexicon()
    for kw in ({}, {"decode_temperature": 1.0}):  # the beam, and sampling left to right
        recs = generate(model, num=6, steps=3, seed=0, lexicon=True, lexicon_beam=4, round_below=0.5, **kw)
        for r in recs:  # every word of every sample is a path to a whole word of the training split's trie
            bad, node = walk(model, lex, r["tokens"])
            assert bad == 0, r["text"]
            if len(r["tokens"]) < model.cfg.data.seq_len - 2 or not kw:  # not cut at L: it ends on a whole word
                assert bool(lex.terminal[node]), r["text"]
    # without it the same model writes what the lexicon would not (so the check above is not empty)
    assert violations(model, lex, generate(model, num=6, steps=3, seed=0, round_below=0.5)) > 0
    with pytest.raises(UserError, match="lexicon-beam"):
        generate(model, num=2, steps=2, lexicon=True, lexicon_beam=0)
    with pytest.raises(UserError, match="stop_mass"):
        generate(model, num=2, steps=2, lexicon=True, stop_mass=0.5)


def test_ar_samples_with_the_lexicon_spell_only_training_words(tmp_path):
    from tests.conftest import ROOT

    from ldlm.cli import main
    from ldlm.generate import generate, load_model

    assert main(["train", "--config", f"{ROOT}/configs/micro-ar.yaml", "--out", str(tmp_path / "ar"), "--quiet",
                 "train.steps=2", "train.batch_size=4", "train.eval_every=0", "train.threads=1",
                 f"data.cache_dir={tmp_path / 'cache'}", "data.max_passages=60"]) == 0
    model = load_model(str(tmp_path / "ar"), device="cpu")
    lex = model.lexicon()
    assert violations(model, lex, generate(model, num=8, seed=0, lexicon=True, temperature=1.0)) == 0
    assert violations(model, lex, generate(model, num=8, seed=0, temperature=1.0)) > 0  # and without it, some
    with pytest.raises(UserError, match="does not apply"):
        generate(model, num=2, lexicon_beam=4)  # AR has no readout to search


def test_the_lexicon_flags_on_the_command_line(tmp_path, capsys):
    from types import SimpleNamespace

    from tests.conftest import train_micro_run

    from ldlm.cli import main
    from ldlm.frontier import sweep_grid

    args = SimpleNamespace(noise_scale="1.2", lexicon="false,yes", lexicon_beam="1,8")
    assert sweep_grid(args) == [{"noise_scale": 1.2, "lexicon": lex, "lexicon_beam": b}  # no beam without the lexicon
                                for lex, b in ((False, 8), (True, 1), (True, 8))]
    run = train_micro_run(tmp_path)
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(run), "--num", "3", "--steps", "2", "--lexicon", "true", "--lexicon-beam", "2",
                 "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["lexicon"], r["lexicon_beam"]) for r in recs] == [(True, 2)] * 3  # the settings that shaped them
    with pytest.raises(SystemExit) as e:
        main(["sample", "--ckpt", str(run), "--lexicon", "maybe"])
    assert e.value.code == 2 and "--lexicon" in capsys.readouterr().err
