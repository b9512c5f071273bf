"""Experiment: read the end of a passage by the total probability of the end tokens ('stop mass'), the word by argmax
among the other tokens. Usage: stopmass.py CKPT NOISE STOP_MASS SEED OUT.jsonl"""
import sys, torch
from ldlm.algorithms.ldlm import LDLM
from ldlm.generate import load_model, generate, write_samples
ckpt, ns, sm, seed, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
orig = LDLM.decode_latents
def decode_latents(self, z0, temperature=0.0, generator=None):
    if sm <= 0:
        return orig(self, z0, temperature, generator)
    logits = self.token_logits(self.decoder(z0).float())
    tok = self.tokenizer
    stop = self.readout.to_local(torch.tensor([tok.sep_token_id, tok.pad_token_id], device=logits.device))
    p_stop = torch.softmax(logits, -1)[..., stop].sum(-1)
    logits[..., stop] = float("-inf")
    local = logits.argmax(-1)
    local = torch.where(p_stop >= sm, stop[0], local)
    return self.readout.to_global(local)
LDLM.decode_latents = decode_latents
m = load_model(ckpt, device="cpu")
recs = generate(m, num=256, noise_scale=ns, seed=seed)
write_samples(recs, out)
