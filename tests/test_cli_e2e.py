"""End to end through the CLI: micro train -> checkpoint -> resume -> sample."""
import json

from ldlm.cli import main


def test_train_resume_sample(tmp_path, root, capsys):
    out = tmp_path / "run"
    common = [f"data.cache_dir={tmp_path / 'cache'}", "train.save_every=10"]
    assert main(["train", "--config", f"{root}/configs/micro.yaml", "--out", str(out), "--quiet", *common]) == 0
    assert (out / "latest").read_text().strip() == "ckpt-000020"
    ck = out / "ckpt-000020"
    for f in ("config.json", "model.safetensors", "ema.safetensors", "train.safetensors", "state.json"):
        assert (ck / f).is_file(), f
    assert json.loads((ck / "config.json").read_text())["train"]["steps"] == 20
    assert (out / "curves.png").is_file() and (out / "timesteps.png").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss" in r and r.get("split") != "valid"]
    assert train_lines and all(k in train_lines[-1] for k in ("diff", "dec_ce", "dec_mse", "w_enc", "tok_s"))
    # the accuracy argmax runs on logged steps only, and every log line has it
    assert all(0 <= r["dec_acc"] <= 1 for r in train_lines)
    valid = [r for r in lines if r.get("split") == "valid"]
    assert valid and "t_density" in valid[-1] and "diff_trivial" in valid[-1]

    # a second train into the same folder without --resume must refuse and leave the run alone
    before = (ck / "model.safetensors").read_bytes()
    assert main(["train", "--config", f"{root}/configs/micro.yaml", "--out", str(out), "--quiet", *common]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (ck / "model.safetensors").read_bytes() == before

    # resume and extend: continues from step 20 to 30, keeps the last 2 checkpoints
    assert main(["train", "--out", str(out), "--resume", "--quiet", "train.steps=30", *common]) == 0
    assert (out / "latest").read_text().strip() == "ckpt-000030"
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 30 and sorted(p.name for p in out.glob("ckpt-*")) == ["ckpt-000020", "ckpt-000030"]

    samples = tmp_path / "samples.jsonl"
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(out), "--num", "6", "--steps", "5", "--seed", "3", "--out", str(samples),
                 "--solver", "ode", "--noise-scale", "0.8"]) == 0
    printed = capsys.readouterr().out
    recs = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(recs) == 6 and "6 samples" in printed
    r = recs[0]
    assert isinstance(r["text"], str) and isinstance(r["tokens"], list)
    assert r["steps"] == 5 and r["solver"] == "ode" and r["noise_scale"] == 0.8 and r["seed"] == 3
    assert all(102 not in x["tokens"] and 0 not in x["tokens"] for x in recs)  # cut at [SEP]/[PAD]

    # same seed -> same samples (Python API)
    from ldlm.generate import generate, load_model

    model = load_model(out)
    a = generate(model, num=4, steps=5, seed=1)
    b = generate(model, num=4, steps=5, seed=1)
    assert [x["tokens"] for x in a] == [x["tokens"] for x in b]

    assert main(["sample", "--ckpt", str(out), "--num", "-1"]) == 2
    assert "--num" in capsys.readouterr().err
