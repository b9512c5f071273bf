"""ldlm: latent diffusion language models trained jointly with their latent space (arXiv 2605.07933)."""

__version__ = "0.1.0"
