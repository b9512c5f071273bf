"""Experiment: a contrastive (PMI) token readout -- argmax of log p(token | z) - beta * log p(token | z = 0) over the
word tokens (the end tokens [SEP]/[PAD] left uncorrected), used at the final readout and at the rounding steps.
Usage: pmi.py CKPT NOISE BETA SEED OUT.jsonl [STOP_MASS]"""
import sys, torch
from ldlm.algorithms.ldlm import LDLM
from ldlm.generate import load_model, generate, write_samples
ckpt, ns, beta, seed, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sm = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
cache = {}
def decode_latents(self, z0, temperature=0.0, generator=None):
    logp = torch.log_softmax(self.token_logits(self.decoder(z0).float()), -1)
    tok = self.tokenizer
    stop = self.readout.to_local(torch.tensor([tok.sep_token_id, tok.pad_token_id], device=logp.device))
    if "prior" not in cache:
        prior = torch.log_softmax(self.token_logits(self.decoder(torch.zeros_like(z0[:1])).float()), -1)
        prior[..., stop] = 0.0
        cache["prior"] = prior
    score = logp - beta * cache["prior"]
    if sm > 0:
        p_stop = logp[..., stop].exp().sum(-1)
        score[..., stop] = float("-inf")
        local = torch.where(p_stop >= sm, stop[0], score.argmax(-1))
    else:
        local = score.argmax(-1)
    return self.readout.to_global(local)
LDLM.decode_latents = decode_latents
m = load_model(ckpt, device="cpu")
write_samples(generate(m, num=256, noise_scale=ns, seed=seed), out)
