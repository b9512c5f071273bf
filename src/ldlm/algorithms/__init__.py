"""Registry of generative models behind the common trainer: `build(cfg, tokenizer)`."""
from __future__ import annotations

from .ar import AR
from .base import Algorithm, ids_to_text
from .ldlm import LDLM
from .mdlm import MDLM
from .tencdm import TEncDM

ALGORITHMS: dict[str, type[Algorithm]] = {"ldlm": LDLM, "ar": AR, "mdlm": MDLM, "tencdm": TEncDM}


def build(cfg, tokenizer) -> Algorithm:
    from ..errors import UserError

    if cfg.algo not in ALGORITHMS:
        raise UserError(f"algo '{cfg.algo}' is not available; use one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[cfg.algo](cfg, tokenizer)


__all__ = ["ALGORITHMS", "Algorithm", "build", "ids_to_text"]
