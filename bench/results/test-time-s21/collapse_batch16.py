import os, sys, time
from ldlm.config import load_config
from ldlm.plots import read_metrics
from ldlm.trainer import Trainer
root="/work/main"; tmp=sys.argv[1]; seed=sys.argv[2]; extra=sys.argv[3:]
for recipe in ("naive","full"):
    t=time.time()
    cfg = load_config(os.path.join(root, "configs", "tiny.yaml"), [
        f"recipe={recipe}", "train.steps=60", "train.eval_every=60", "train.eval_batches=2",
        "train.save_every=1000", "train.threads=1", "data.max_passages=1500", "data.valid_fraction=0.05",
        f"data.cache_dir={tmp}/cache", f"train.seed={seed}", *extra])
    run = f"{tmp}/{recipe}-{seed}-{'_'.join(extra)}"
    Trainer(cfg, run, quiet=True).train()
    _, valid = read_metrics(run)
    v=valid[-1]; print(recipe, seed, extra, round(v["latent_erank"],3), round(v["diff_ratio"],3), f"{time.time()-t:.0f}s", flush=True)
