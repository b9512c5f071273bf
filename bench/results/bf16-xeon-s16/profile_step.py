"""Profile 5 of tiny's training steps (after 3 warm-up steps, mid-run) under bf16 autocast or fp32: argv[1] = true | false."""
import os, sys, tempfile
os.environ["LDLM_QUIET"] = "1"
import torch
from torch.profiler import profile, ProfilerActivity
from ldlm.config import load_config
from ldlm.trainer import Trainer
bf16 = sys.argv[1]
torch.set_num_threads(2)
cfg = load_config(os.path.join(os.path.dirname(__file__), "../../../configs/tiny.yaml"), [f"train.bf16={bf16}", "train.steps=500", "train.threads=2"])
tr = Trainer(cfg, tempfile.mkdtemp() + "/run", quiet=True)
tr.model.train(); tr.step = 250; tr.model.step_logs = False
for _ in range(3):
    tr._step(); tr.step += 1
with profile(activities=[ProfilerActivity.CPU]) as p:
    for _ in range(5):
        tr._step(); tr.step += 1
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
