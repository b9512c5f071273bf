"""The benchmark scripts: their rules (headline ratio, converse match, statistics, ablation variants and
resume check) without models, and each script end to end on micro models (--quick, a random evaluator)."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import ablation  # noqa: E402
import benchlib  # noqa: E402
import demo_timing  # noqa: E402
import frontier  # noqa: E402


def _row(algo, label, ppl, ent, sec, **kw):
    return {"algo": algo, "label": label, "gen_ppl": ppl, "entropy": ent, "sec_per_sample": sec, **kw}


def _rows():
    return [
        _row("ldlm", "S10 ns1.0", 120.0, 3.3, 0.002, steps=10, noise_scale=1.0),
        _row("ldlm", "S50 ns1.0", 90.0, 3.3, 0.008, steps=50, noise_scale=1.0),
        _row("ldlm", "S50 ns0.7", 40.0, 2.0, 0.008, steps=50, noise_scale=0.7),  # repetitive: excluded by entropy
        _row("mdlm", "S16 T1.0", 300.0, 3.5, 0.01, steps=16, temperature=1.0),
        _row("mdlm", "S64 T1.0", 150.0, 3.45, 0.03, steps=64, temperature=1.0),
        _row("mdlm", "S256 T1.0", 60.0, 3.4, 0.10, steps=256, temperature=1.0),
        _row("mdlm", "S16 T0.8", 80.0, 2.5, 0.01, steps=16, temperature=0.8),  # too low entropy
    ]


def test_headline_interpolates_along_mdlm_steps():
    h = frontier.headline(_rows(), {"entropy": 3.4}, tol=0.3)
    assert h["status"] == "ok" and h["ldlm"]["label"] == "S50 ns1.0"
    m = h["mdlm"]
    assert m["temperature"] == 1.0 and m["bracket"] == ["S64 T1.0", "S256 T1.0"]
    f = math.log(150 / 90) / math.log(150 / 60)
    assert m["steps"] == pytest.approx(math.exp(math.log(64) + f * math.log(4)))
    assert 64 < m["steps"] < 256 and m["entropy_ok"]
    assert h["ratio_from_sweep"] == pytest.approx(m["sec_per_sample"] / 0.008)
    # the low-entropy MDLM curve crosses at once but is not "similar entropy"
    low = next(c for c in h["mdlm_crossings"] if c["temperature"] == 0.8)
    assert not low["entropy_ok"] and low["at_grid_minimum"]


def test_headline_says_when_mdlm_never_reaches():
    rows = [r for r in _rows() if r["label"] not in ("S256 T1.0", "S16 T0.8")]
    h = frontier.headline(rows, {"entropy": 3.4}, tol=0.3)
    assert h["status"] == "mdlm_never_reaches" and "never reaches" in h["message"]
    assert h["ratio_lower_bound_from_sweep"] == pytest.approx(0.03 / 0.008)


def test_converse_match_takes_mdlm_best_and_fastest_ldlm_at_least_as_good():
    rows = [r for r in _rows() if r["label"] not in ("S256 T1.0",)]  # MDLM's best is now S64 T1.0 (150, 3.45)
    c = frontier.at_mdlm_best(rows, {"entropy": 3.4}, tol=0.3, ppl_tol=0.1)
    assert c["status"] == "ok" and c["mdlm_best"]["label"] == "S64 T1.0"  # S16 T0.8 is lower but too low in entropy
    assert c["mdlm"]["label"] == "S64 T1.0"  # S16 T1.0 (300) is not within 10 % of 150
    assert c["ldlm"]["label"] == "S10 ns1.0"  # both S10 and S50 at ns1.0 beat 150; S10 is the faster
    assert c["ratio_from_sweep"] == pytest.approx(0.03 / 0.002)
    # a flat MDLM curve is charged at its cheapest point near the best, not at its most expensive one
    flat = rows + [_row("mdlm", "S1024 T1.0", 140.0, 3.44, 0.5, steps=1024, temperature=1.0)]
    c = frontier.at_mdlm_best(flat, {"entropy": 3.4}, tol=0.3, ppl_tol=0.1)
    assert c["mdlm_best"]["label"] == "S1024 T1.0" and c["mdlm"]["label"] == "S64 T1.0"
    assert c["ldlm"]["gen_ppl"] <= 140.0
    worse = [dict(r, gen_ppl=r["gen_ppl"] * 10) if r["algo"] == "ldlm" else r for r in rows]
    assert frontier.at_mdlm_best(worse, {"entropy": 3.4}, tol=0.3)["status"] == "ldlm_never_reaches"


def test_headline_without_gen_ppl():
    rows = [dict(r, gen_ppl=None) for r in _rows()]
    assert frontier.headline(rows, None, 0.3)["status"].startswith("unavailable")


def test_summary_and_grids():
    s = benchlib.summary([3.0, 1.0, 2.0, 4.0])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0 and s["n"] == 4 and s["q1"] <= s["q3"]
    assert benchlib.summary([5.0])["q1"] == 5.0
    a = frontier.parse_args(["--quick"])
    assert [frontier.label(g) for g in frontier.grid("mdlm", a)] == ["S4 T1.0 p0.9", "S16 T1.0 p0.9", "S4 T1.0 p1.0",
                                                                     "S16 T1.0 p1.0"]
    assert frontier.grid("ar", frontier.parse_args([]))[-1] == {"temperature": 1.1, "top_p": 1.0}


def test_default_frontier_grids_sweep_every_knob_of_every_model_equally_broadly():
    a = frontier.parse_args([])
    ldlm = {"steps", "noise_scale", "decode_temperature", "round_below", "round_temperature"}
    knobs = {"ldlm": ldlm, "mdlm": {"steps", "temperature", "top_p"}, "ar": {"temperature", "top_p"}, "tencdm": ldlm}
    sizes = {}
    for algo, want in knobs.items():
        g = frontier.grid(algo, a)
        assert set(g[0]) == want and len({frontier.label(s) for s in g}) == len(g)
        for k in want:  # every knob takes at least two values, so none is fixed by the script
            assert len({s[k] for s in g}) >= 2, (algo, k)
        sizes[algo] = len(g)
    assert len(set(sizes.values())) == 1, sizes
    # the rounding readout's temperature does nothing without rounding: not swept there (no duplicate samples)
    g = frontier.grid("ldlm", a)
    assert not [s for s in g if s["round_below"] == 0 and s["round_temperature"] != 0]
    assert {s["round_temperature"] for s in g if s["round_below"] > 0} == {0.0, 1.0}
    # both baselines' temperature-like knobs reach below 1 (the low-entropy side), as LDLM's noise scale does
    for algo, k in (("ldlm", "noise_scale"), ("mdlm", "temperature"), ("ar", "temperature"), ("mdlm", "top_p"),
                    ("ar", "top_p")):
        assert min(s[k] for s in frontier.grid(algo, a)) < 1.0


def test_readout_and_guidance_knobs_are_swept_only_when_given():
    """sample.readout_contrast / stop_mass / mean_guidance are opt-in in bench/frontier.py: absent from the default
    grid (which keeps the models' equal breadth), a grid dimension when listed, at their off value left out of the
    label."""
    assert not {"readout_contrast", "stop_mass", "mean_guidance"} & set(frontier.grid("ldlm", frontier.parse_args([]))[0])
    a = frontier.parse_args(["--ldlm-steps", "25", "--ldlm-noise", "1.0", "--ldlm-decode-temps", "0", "--ldlm-round", "0.1",
                             "--ldlm-round-temps", "0", "--ldlm-stop-mass", "0,0.5"])
    g = frontier.grid("ldlm", a)
    assert [s["stop_mass"] for s in g] == [0.0, 0.5] and "readout_contrast" not in g[0]
    assert [frontier.label(s) for s in g] == ["S25 ns1.0 dT0.0 rb0.1", "S25 ns1.0 dT0.0 rb0.1 sm0.5"]
    assert len(frontier.grid("tencdm", frontier.parse_args(["--tencdm-contrast", "0.1,0.2,0.3"]))) == \
        3 * len(frontier.grid("tencdm", frontier.parse_args([])))
    g = frontier.grid("ldlm", frontier.parse_args(["--ldlm-steps", "25", "--ldlm-noise", "1.0", "--ldlm-decode-temps", "0",
                                                   "--ldlm-round", "0.1", "--ldlm-round-temps", "0",
                                                   "--ldlm-mean-guidance", "0,0.3"]))
    assert [frontier.label(s) for s in g] == ["S25 ns1.0 dT0.0 rb0.1", "S25 ns1.0 dT0.0 rb0.1 mg0.3"]


def test_one_entropy_tolerance_in_both_directions():
    """The case of the first frontier: MDLM's best at entropy 3.26, data 3.37, tol 0.3. LDLM at 10 steps
    (3.00) is below the data - 0.3 bar the headline uses for LDLM's own best, so it no longer matches;
    the next LDLM point that clears both bars does."""
    rows = [_row("mdlm", "S16 T0.9", 2618.7, 3.275, 0.046, steps=16, temperature=0.9, top_p=1.0),
            _row("mdlm", "S1024 T0.9", 2508.8, 3.257, 0.165, steps=1024, temperature=0.9, top_p=1.0),
            _row("ldlm", "S10 ns1.0", 825.5, 3.000, 0.0114, steps=10, noise_scale=1.0),
            _row("ldlm", "S25 ns1.0", 1086.3, 3.207, 0.0213, steps=25, noise_scale=1.0)]
    data = {"entropy": 3.368}
    c = frontier.at_mdlm_best(rows, data, tol=0.3)
    assert c["status"] == "ok" and c["ldlm"]["label"] == "S25 ns1.0"
    assert c["entropy_floor"] == pytest.approx(3.368 - 0.3)
    h = frontier.headline(rows, data, tol=0.3)
    assert h["ldlm"]["label"] == "S25 ns1.0" and h["entropy_floor"] == pytest.approx(3.368 - 0.3)
    # the same predicate both ways: a point matches a target iff gen-PPL <= and entropy >= max(data, target) - tol
    for tol in (0.1, 0.3):
        floor = frontier.entropy_floor(3.368, 3.257, tol)
        assert frontier.matches({"gen_ppl": 100, "entropy": floor}, {"gen_ppl": 100, "entropy": 3.257}, 3.368, tol)
        assert not frontier.matches({"gen_ppl": 100, "entropy": floor - 1e-6}, {"gen_ppl": 100, "entropy": 3.257},
                                    3.368, tol)
    assert frontier.entropy_floor(None, 3.2, 0.3) == pytest.approx(2.9)


def test_headline_accepts_a_higher_entropy_mdlm_crossing_and_tracks_top_p():
    """More diversity at the same gen-PPL is never held against the other model; curves are per (T, top-p)."""
    rows = [_row("ldlm", "S50 ns1.0", 90.0, 3.1, 0.008, steps=50, noise_scale=1.0),
            _row("mdlm", "S16 T1.0 p1.0", 300.0, 3.9, 0.01, steps=16, temperature=1.0, top_p=1.0),
            _row("mdlm", "S64 T1.0 p1.0", 80.0, 3.8, 0.03, steps=64, temperature=1.0, top_p=1.0),
            # cheaper, but below max(data 3.2, LDLM's 3.1) - 0.3 = 2.9
            _row("mdlm", "S16 T1.0 p0.9", 200.0, 2.85, 0.01, steps=16, temperature=1.0, top_p=0.9),
            _row("mdlm", "S64 T1.0 p0.9", 85.0, 2.8, 0.02, steps=64, temperature=1.0, top_p=0.9)]
    h = frontier.headline(rows, {"entropy": 3.2}, tol=0.3)
    assert h["status"] == "ok"
    by_p = {c["top_p"]: c for c in h["mdlm_crossings"]}
    assert by_p[1.0]["entropy_ok"] and by_p[1.0]["entropy"] > 3.1 + 0.3  # above LDLM's by more than tol: fine
    assert not by_p[0.9]["entropy_ok"] and by_p[0.9]["sec_per_sample"] < by_p[1.0]["sec_per_sample"]
    assert h["mdlm"]["top_p"] == 1.0 and h["mdlm"]["bracket"] == ["S16 T1.0 p1.0", "S64 T1.0 p1.0"]


def test_matches_against_ar_in_both_directions():
    rows = _rows() + [_row("ar", "T0.8 p1.0", 70.0, 3.2, 0.004, temperature=0.8, top_p=1.0),
                      _row("ar", "T1.0 p1.0", 130.0, 3.5, 0.005, temperature=1.0, top_p=1.0),
                      _row("ar", "T0.6 p0.9", 20.0, 1.5, 0.001, temperature=0.6, top_p=0.9)]  # repetitive
    d = frontier.at_ldlm_best_discrete(rows, {"entropy": 3.4}, tol=0.3, other="ar")
    # LDLM's best is S50 ns1.0 (90, 3.3); AR T0.8 (70, 3.2) matches it; T0.6 is below the entropy bar
    assert d["status"] == "ok" and d["ar"]["label"] == "T0.8 p1.0"
    assert d["ratio_from_sweep"] == pytest.approx(0.004 / 0.008)
    c = frontier.at_best(rows, {"entropy": 3.4}, tol=0.3, other="ar")
    assert c["ar_best"]["label"] == "T0.8 p1.0" and c["status"] == "ldlm_never_reaches"  # no LDLM point <= 70


def test_ablation_variants_are_valid_configs(root):
    from ldlm.config import load_config

    vs = ablation.variants(0, 0.5)
    assert {"full", "naive", "ce-decoder", "no-warmup", "uniform-t", "no-dec-noise", "two-stage", "paper",
            "paper-warmup-1600", "full-seed2", "naive-seed2"} == set(vs)
    cfgs = {n: load_config(str(Path(root) / "configs" / "tiny.yaml"), o) for n, (_, o) in vs.items()}
    assert cfgs["two-stage"].recipe.two_stage == 0.5 and cfgs["full-seed2"].train.seed == 1
    assert cfgs["naive"].recipe.decoder_loss == "ce" and cfgs["naive"].recipe.timesteps == "uniform"
    assert cfgs["paper"].recipe.decoder_loss == "mse" and cfgs["paper"].recipe.dec_noise_std == 3.0
    pw = cfgs["paper-warmup-1600"].recipe  # the paper's recipe, only its warmup's length fixed in steps
    assert ablation.config_diff(cfgs["paper"].to_dict(), cfgs["paper-warmup-1600"].to_dict()) == ["recipe.warmup_steps"]
    assert pw.warmup == "sigmoid" and pw.warmup_steps == 1600
    # the suite spells out its recipe: a config whose own recipe differs cannot move the full row
    assert cfgs["full"].recipe.decoder_loss == "mse+ce" and cfgs["ce-decoder"].recipe.decoder_loss == "ce"
    assert ablation.variants(0, 0.5)["full"][1] == ablation.RECIPE_BASE
    assert ablation.config_diff(cfgs["full"].to_dict(), cfgs["full"].to_dict()) == []
    assert ablation.config_diff(cfgs["full"].to_dict(), cfgs["uniform-t"].to_dict()) == ["recipe.timesteps"]
    # sampling settings do not change a trained run; a key a saved run lacks takes its default
    older = cfgs["full"].to_dict()
    older["sample"]["steps"] += 1
    del older["recipe"]["cond_prob"]
    assert ablation.config_diff(older, cfgs["full"].to_dict()) == []
    older["recipe"]["cond_prob"] = 0.5
    assert ablation.config_diff(older, cfgs["full"].to_dict()) == ["recipe.cond_prob"]


def test_speed_script_on_micro_models_writes_json_table_and_plot(root, tmp_path):
    import json

    import speed

    out = tmp_path / "speed.json"
    cfg = Path(root) / "configs"
    res = speed.main(["--quick", "--threads", "1", "--config-ldlm", str(cfg / "micro.yaml"),
                      "--config-mdlm", str(cfg / "micro-mdlm.yaml"), "--config-ar", str(cfg / "micro-ar.yaml"),
                      "--ldlm-steps", "2,4", "--mdlm-steps", "4", "--mdlm-nocache-steps", "4", "--batches", "2",
                      "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["plan"]["ldlm"] == [2, 4] and {m for m in saved["models"]} == {"ldlm", "mdlm", "ar"}
    rows = saved["sampling"]
    assert [(r["algo"], r.get("steps"), r.get("cache")) for r in rows if r["algo"] != "ar"] == [
        ("ldlm", 2, None), ("ldlm", 4, None), ("mdlm", 4, True), ("mdlm", 4, False)]
    assert all(r["sec_per_sample"]["median"] > 0 and r["batch"] == 2 for r in rows)
    assert [t["algo"] for t in saved["training"]] == ["ldlm", "mdlm", "ar"]
    table = out.with_suffix(".md").read_text()
    assert table.count("\n| LDLM |") == 3 and "| MDLM | 4 steps, cache off | 2 |" in table  # 2 sampling + 1 training
    assert out.with_suffix(".png").stat().st_size > 0 and res["wall_s"] > 0
    out.with_suffix(".md").unlink()
    speed.main(["--report", str(out)])  # re-rendered from the JSON alone
    assert out.with_suffix(".md").read_text() == table


def _check_converse(c, rows, data_h, tol, other):
    """Whatever the status, it is what the one-tolerance rule says about these rows."""
    best = c[f"{other}_best"]
    ld = [r for r in rows if r["algo"] == "ldlm"]
    ok = [r for r in ld if frontier.matches(r, best, data_h, tol)]
    assert c["status"] == ("ok" if ok else "ldlm_never_reaches")
    if ok:
        assert c["ldlm"]["label"] == min(ok, key=lambda r: r["sec_per_sample"])["label"]


def test_frontier_script_quick_end_to_end(random_lm, tmp_path):
    """Four micro runs (LDLM, MDLM, AR, TEncDM), each model's full knob set on small grids, a random
    evaluator: every point scored, every match decided as the rule says, outputs written and reused."""
    res = frontier.main(["--quick", "--threads", "1", "--eval-lm", random_lm, "--out", str(tmp_path)])
    labels = {(r["algo"], r["label"]) for r in res["rows"]}
    assert labels == {("ldlm", f"S{s} ns1.0 dT{t}") for s in (5, 10) for t in (0.0, 1.0)} | \
        {("mdlm", f"S{s} T1.0 p{p}") for s in (4, 16) for p in (0.9, 1.0)} | \
        {("ar", f"T{t} p{p}") for t in (0.8, 1.0) for p in (0.9, 1.0)} | \
        {("tencdm", f"S{s} ns1.0 dT{t}") for s in (5, 10) for t in (0.0, 1.0)}
    assert all(r["gen_ppl"] > 1 and r["sec_per_sample"] > 0 for r in res["rows"])
    rows, data_h, tol = res["rows"], res["data"]["entropy"], 0.3
    h = res["headline"]
    best, by_rule = frontier.best_by_rule([r for r in rows if r["algo"] == "ldlm"], data_h, tol)
    assert h["ldlm"]["label"] == best["label"] and h["entropy_floor"] == frontier.entropy_floor(data_h, best["entropy"], tol)
    assert h["status"] == ("ok" if any(c["entropy_ok"] for c in h["mdlm_crossings"]) else "mdlm_never_reaches")
    for c in h["mdlm_crossings"]:
        assert c["entropy_ok"] == (c["entropy"] >= h["entropy_floor"])
    _check_converse(h["at_mdlm_best"], rows, data_h, tol, "mdlm")
    for other in ("ar", "tencdm"):
        _check_converse(h[f"vs_{other}"][f"at_{other}_best"], rows, data_h, tol, other)
        to_other = h[f"vs_{other}"]["at_ldlm_best"]
        ok = [r for r in rows if r["algo"] == other and frontier.matches(r, best, data_h, tol)]
        assert to_other["status"] == ("ok" if ok else f"{other}_never_reaches")
    for m in (h, h["at_mdlm_best"], *h["vs_ar"].values(), *h["vs_tencdm"].values()):  # every match found was retimed
        assert ("timing" in m) == (m["status"] == "ok")
        if m["status"] == "ok":
            assert m["timing"]["ratio"]["n"] == 2
    for f in ("frontier.json", "frontier.csv", "frontier.png"):
        assert (tmp_path / f).stat().st_size > 0
    timed_md = (tmp_path / "frontier.md").read_text()
    assert ("a lower bound on the ratio" in timed_md) == (h["status"] == "mdlm_never_reaches")
    # points reused; --timing-repeats 0 (a sweep beside other jobs): nothing re-timed, and the table says why
    again = frontier.main(["--quick", "--threads", "1", "--eval-lm", random_lm, "--out", str(tmp_path),
                           "--timing-repeats", "0"])
    assert [r["gen_ppl"] for r in again["rows"]] == [r["gen_ppl"] for r in res["rows"]]
    h = again["headline"]
    assert not any("timing" in m for m in (h, h["at_mdlm_best"], *h["vs_ar"].values(), *h["vs_tencdm"].values()))
    md = (tmp_path / "frontier.md").read_text()
    assert "not speed measurements" in md and "not timed" in md and "x faster" not in md
    assert "lower bound" not in md and "ratio_lower_bound_from_sweep" not in h and "takes not timed" not in md
    (tmp_path / "frontier.png").unlink()
    frontier.main(["--replot", "--out", str(tmp_path)])  # from the JSON alone
    assert (tmp_path / "frontier.png").stat().st_size > 0
    # two sampling seeds, one point per model: each point is the mean of its seeds' rows, and seed 0's row is
    # the single-seed sweep's point (the same draw, the same score); the one-seed points are not reused for it
    one = {(r["algo"], r["label"]): r for r in res["rows"]}
    two = frontier.main(["--quick", "--threads", "1", "--eval-lm", random_lm, "--out", str(tmp_path),
                         "--timing-repeats", "0", "--sample-seed", "0,1", "--ldlm-steps", "5", "--ldlm-decode-temps",
                         "0", "--tencdm-steps", "5", "--tencdm-decode-temps", "0", "--mdlm-steps", "4",
                         "--mdlm-top-p", "1.0", "--ar-temps", "1.0", "--ar-top-p", "1.0"])
    assert len(two["rows"]) == 4 and len(two["seed_rows"]) == 8 and two["sample_seeds"] == [0, 1]
    for r in two["rows"]:
        seeds = [x for x in two["seed_rows"] if (x["algo"], x["label"]) == (r["algo"], r["label"])]
        assert [x["sample_seed"] for x in seeds] == [0, 1] and r["sample_seeds"] == [0, 1]
        for k in ("gen_ppl", "entropy", "mauve"):
            assert r[k] == pytest.approx((seeds[0][k] + seeds[1][k]) / 2)
            assert r[f"{k}_std"] == pytest.approx(abs(seeds[0][k] - seeds[1][k]) / 2 ** 0.5)
        assert seeds[0]["gen_ppl"] == pytest.approx(one[(r["algo"], r["label"])]["gen_ppl"], rel=1e-6)
    assert "the mean ± sample std over sampling seeds 0, 1" in (tmp_path / "frontier.md").read_text()
    with pytest.raises(SystemExit):
        frontier.parse_args(["--sample-seed", "0,x"])


def test_demo_timing_splits_make_demo_by_the_commands_it_echoes(tmp_path):
    # make echoes each recipe line before running it; a phase runs from one `ldlm` command's echo to the next
    (tmp_path / "Makefile").write_text("demo:\n\t@echo start\n\t-.venv/bin/ldlm train x\n\tsleep 0.6\n"
                                       "\t-.venv/bin/ldlm eval y\n\tsleep 0.2\n")
    import os

    phases: dict = {}
    total = demo_timing.timed(["make", "demo"], tmp_path, dict(os.environ), tmp_path / "log", phases)
    assert list(phases) == ["train", "eval"]
    # each mark is when the echo was read, a few ms after make wrote it: the bounds leave room for that lag
    assert phases["train"] >= 0.5 and phases["eval"] >= 0.1 and phases["train"] > phases["eval"]
    assert phases["train"] + phases["eval"] <= total
    assert "ldlm train x" in (tmp_path / "log").read_text()
    line = demo_timing.setup_line({"corpus": 2.4, "prepare": 71.0, "total": 80.2})
    assert line == ("reading and tokenising the corpus 2 s, frozen-LM features and vocabulary 71 s, "
                    "80 s in all (model, data, optimizer)")


def test_headline_message_names_a_lower_bound_only_for_a_timed_sweep():
    h = {"status": "mdlm_never_reaches", "message": "MDLM never reaches it", "lower_bound": "a lower bound on the ratio is X"}
    assert frontier.headline_message(h) == "MDLM never reaches it; a lower bound on the ratio is X"
    assert frontier.headline_message({**h, "untimed": True}) == "MDLM never reaches it"
    assert frontier.headline_message({"status": "unavailable"}) == "unavailable"


def test_ablation_script_quick_end_to_end(random_lm, tmp_path):
    args = ["--quick", "--only", "full,naive", "--threads", "1", "--eval-lm", random_lm, "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    res = ablation.main(args)
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {"full", "naive"}
    assert rows["naive"]["recipe"]["decoder_loss"] == "ce" and rows["full"]["recipe"]["decoder_loss"] == "mse+ce"
    for r in rows.values():
        assert r["metrics"]["gen_ppl"] > 1 and r["valid"]["step"] == r["steps"] and 0 < r["valid"]["latent_erank"] <= 1
    table = (tmp_path / "ablation.md").read_text()
    assert "| full | full recipe | 0 |" in table and "| naive |" in table
    for r in rows.values():  # every validation pass is kept, and plotted
        curve = r["valid_curve"]
        assert [p["step"] for p in curve] == sorted(p["step"] for p in curve) and curve[-1]["step"] == r["steps"]
        assert curve[-1]["recon_acc"] == r["valid"]["recon_acc"]
    assert (tmp_path / "ablation-curves.png").read_bytes()[:4] == b"\x89PNG"
    again = ablation.main(args)  # finished runs are not retrained or re-scored
    assert [r["metrics"]["gen_ppl"] for r in again["rows"]] == [r["metrics"]["gen_ppl"] for r in res["rows"]]


def test_ablation_runs_into_one_out_keep_each_others_rows(monkeypatch, random_lm, tmp_path):
    """Two processes with other --only lists share --out (the 2000-step re-test ran rows in pairs): a row the
    other one wrote while this one was training or scoring survives this one's writes."""
    args = ["--quick", "--threads", "1", "--eval-lm", random_lm, "--runs", str(tmp_path / "runs"), "--out",
            str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'cache'}"]

    def fake_run(name, overrides, a, device):  # no training: the merge is what is under test
        run = a.runs / name
        run.mkdir(parents=True, exist_ok=True)
        (run / "latest").write_text("step_1")
        return run

    def fake_eval(name, run, ev, a, grid=None):
        if name == "full":  # the other process finishes naive while this one scores full
            ablation.main(args + ["--only", "naive"])
        gen_ppl = {"full": 100.0, "naive": 900.0, "full-seed2": 120.0, "naive-seed2": 800.0, "two-stage-seed2": 300.0}[name]
        return {"variant": name, "seed": 1 if name.endswith("seed2") else 0,
                "metrics": {"gen_ppl": gen_ppl, "entropy": 3.0}, "valid": {}}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "evaluate_run", fake_eval)
    res = ablation.main(args + ["--only", "full-seed2,full"])
    assert [r["variant"] for r in res["rows"]] == ["full", "naive", "full-seed2"]  # the suite's order
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == ["full", "naive", "full-seed2"]
    # a variant and its second seed are paired by name, in every suite
    noise = ablation.seed_noise({r["variant"]: r for r in saved["rows"]})
    assert noise == ["- `full` vs `full-seed2` (two seeds): gen-PPL 100.0 / 120.0; entropy 3.000 / 3.000"]
    # a second seed the suite does not list is made on request (X's overrides, seed + 1) and sits after X
    res = ablation.main(args + ["--only", "two-stage-seed2"])
    assert [r["variant"] for r in res["rows"]] == ["full", "naive", "two-stage-seed2", "full-seed2"]  # after two-stage
    assert res["overrides"]["two-stage-seed2"] == ablation.RECIPE_BASE + ["recipe.two_stage=0.5", "train.seed=1"]
    table = (tmp_path / "ablation.md").read_text()
    assert "| two-stage-seed2 | two-stage: autoencoder 50% of steps, then frozen, seed 1 | 1 |" in table
    # each row keeps the command that scored it; the report names the other processes' commands
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert all(r["command"] == saved["machine"]["command"] for r in saved["rows"])
    saved["rows"][0]["command"] = "bench/ablation.py --only full"
    assert "(its rows; the others by: `bench/ablation.py --only full`)" in ablation.markdown(saved)
    with pytest.raises(SystemExit, match="unknown variant"):
        ablation.main(args + ["--only", "nothing-seed2"])


def test_shapes_suite_trains_baseline_shapes_and_refuses_an_ldlm_config(root, random_lm, tmp_path):
    cfg = str(Path(root) / "configs" / "micro-ar.yaml")
    args = ["--suite", "shapes", "--config", cfg, "--only", "base,wide", "--num", "8", "--threads", "1",
            "--eval-lm", random_lm, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path),
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.steps=3"]
    res = ablation.main(args)
    rows = {r["variant"]: r for r in res["rows"]}
    assert res["benchmark"] == "shapes-micro-ar" and set(rows) == {"base", "wide"}
    # each variant changes only its own key: the wider net (384 against micro-ar's 64) has more weights
    assert rows["wide"]["params"]["non_embedding"] > rows["base"]["params"]["non_embedding"] > 0
    assert rows["wide"]["steps"] == rows["base"]["steps"] == 3
    for r in rows.values():
        assert r["valid"]["loss"] > 0 and r["metrics"]["gen_ppl"] > 1
    table = (tmp_path / "shapes-micro-ar.md").read_text()
    assert table.startswith("# Baseline shapes: `micro-ar.yaml`") and "| wide | width 384" in table
    assert "val loss" in table and "NLL" in table
    with pytest.raises(SystemExit, match="for the baselines"):
        ablation.main(["--suite", "shapes", "--config", str(Path(root) / "configs" / "micro.yaml"), "--runs",
                       str(tmp_path / "runs2"), "--out", str(tmp_path), "--eval-lm", random_lm])


def test_other_corpus_keeps_prose_paragraphs_as_passages_of_whole_sentences(tmp_path):
    import other_corpus

    pkg = tmp_path / "src" / "pkg"
    (pkg / "tests").mkdir(parents=True)
    prose = ("The parser reads one line at a time. It keeps the state of every open block between calls. "
             "When the input ends early, the caller gets the blocks that were closed so far.")
    (pkg / "mod.py").write_text(f'"""{prose}\n\nExample::\n\n    >>> parse(x)\n    1\n"""\n\n'
                                'def f():\n    """x = y + 1; return z"""\n', encoding="utf-8")
    (pkg / "tests" / "test_mod.py").write_text(f'"""{prose} Tests are left out."""\n', encoding="utf-8")
    (pkg / "broken.py").write_text("def (:\n", encoding="utf-8")  # unparsable files are skipped
    out = other_corpus.build([tmp_path / "src"], passage_words=12)
    assert out == ["The parser reads one line at a time. It keeps the state of every open block between calls.",
                   "When the input ends early, the caller gets the blocks that were closed so far."]
    assert other_corpus.is_prose(prose) and not other_corpus.is_prose("x = y + 1; return z, w, q, r, s, t.")
    corpus = tmp_path / "c.txt"
    other_corpus.main(["--root", str(tmp_path / "src"), "--passage-words", "12", "--out", str(corpus)])
    assert corpus.read_text(encoding="utf-8").splitlines() == out
    with pytest.raises(SystemExit, match="no prose docstrings"):
        other_corpus.main(["--root", str(pkg / "tests" / "nothing"), "--out", str(tmp_path / "d.txt")])


def test_ablation_seed_sets_every_run_and_second_seed_rows_add_one():
    a = ablation.parse_args(["--seed", "3", "--steps", "7"])
    vs = ablation.variants(a.seed, a.two_stage)
    seeds = {n: ablation.variant_config(vs[n][1], a, "cpu").train.seed for n in ("full", "ce-decoder", "full-seed2",
                                                                                "naive-seed2")}
    assert seeds == {"full": 3, "ce-decoder": 3, "full-seed2": 4, "naive-seed2": 4}
    assert ablation.variant_config(vs["two-stage"][1], a, "cpu").train.steps == 7


def _sweep_row(name, algo, lr, seed, score, status="ok"):
    return {"config_name": name, "algo": algo, "lr": lr, "seed": seed, "score": score, "status": status}


def test_lr_sweep_picks_each_config_by_its_mean_score_over_seeds():
    import lr_sweep

    runs = [_sweep_row("tiny-ar", "ar", 5e-4, 0, 5.6), _sweep_row("tiny-ar", "ar", 5e-4, 1, 5.4),  # mean 5.5
            _sweep_row("tiny-ar", "ar", 1e-3, 0, 5.3), _sweep_row("tiny-ar", "ar", 1e-3, 1, 5.9),  # mean 5.6
            _sweep_row("tiny-ar", "ar", 2e-3, 0, 4.0), _sweep_row("tiny-ar", "ar", 2e-3, 1, None, "failed: nan"),
            _sweep_row("tiny", "ldlm", 5e-4, 0, 3.1), _sweep_row("tiny", "ldlm", 1e-3, 0, 2.9),
            _sweep_row("tiny", "ldlm", 2e-3, 0, 3.0)]
    best = lr_sweep.pick_best(runs)
    # 2e-3 had the single lowest score but a failed seed: not eligible; 5e-4 wins on the mean
    assert best["tiny-ar"]["lr"] == 5e-4 and best["tiny-ar"]["score"] == pytest.approx(5.5)
    assert best["tiny-ar"]["at_edge"] and "2e-3" not in {k for k in best["tiny-ar"]["by_lr"]}
    assert best["tiny"]["lr"] == 1e-3 and not best["tiny"]["at_edge"] and best["tiny"]["metric"] == "objective"
    assert "lr" not in lr_sweep.pick_best([_sweep_row("x", "mdlm", 1e-3, 0, None, "failed: nan")])["x"]
    # --widen: a best at the low end adds the rate below it, at the high end the one above, inside none
    assert lr_sweep.next_rate(best["tiny-ar"]) == pytest.approx(2.5e-4)
    assert lr_sweep.next_rate(best["tiny"]) is None
    top = lr_sweep.pick_best([_sweep_row("t", "tencdm", lr, 0, sc) for lr, sc in ((5e-4, 1.0), (1e-3, 0.9), (2e-3, 0.8))])
    assert lr_sweep.next_rate(top["t"]) == pytest.approx(4e-3)


def test_lr_sweep_scores_are_each_models_own_validation_loss():
    import lr_sweep

    v = {"diff": 0.8, "dec_ce": 2.5, "dec_mse": 0.9, "nll": 5.5, "nelbo": 6.2}
    mse = {"lambda_ce": 1.0, "lambda_dec": 0.5, "decoder_loss": "mse"}
    assert lr_sweep.score("ldlm", v, mse) == pytest.approx(0.8 + 2.5 + 0.45)
    assert lr_sweep.score("ldlm", v, {**mse, "decoder_loss": "mse+ce"}) == pytest.approx(0.8 + 2.5 + 0.45)
    assert lr_sweep.score("ldlm", v, {**mse, "decoder_loss": "ce", "lambda_ce": 2.0}) == pytest.approx(0.8 + 5.0)
    assert lr_sweep.score("tencdm", v, {**mse, "decoder_loss": "ce"}) == pytest.approx(0.8 + 2.5)
    assert lr_sweep.score("ar", v, mse) == 5.5 and lr_sweep.score("mdlm", v, mse) == 6.2
    assert lr_sweep.score("ldlm", {"diff": 0.8}, mse) is None


def test_lr_sweep_end_to_end_on_micro_configs_and_resumes(root, tmp_path, monkeypatch):
    import json

    import lr_sweep

    cfgs = ",".join(f"{root}/configs/{c}.yaml" for c in ("micro", "micro-ar", "micro-mdlm"))
    out = tmp_path / "lr-sweep.json"
    args = ["--configs", cfgs, "--lrs", "1e-3,4e-3", "--steps", "3", "--threads", "1", "--runs", str(tmp_path / "runs"),
            "--out", str(out), "--set", f"data.cache_dir={tmp_path / 'cache'}", "--widen", "0"]
    res = lr_sweep.main(args)
    assert [(r["config_name"], r["lr"]) for r in res["runs"]] == [
        (c, lr) for c in ("micro", "micro-ar", "micro-mdlm") for lr in (1e-3, 4e-3)]
    for r in res["runs"]:
        assert r["status"] == "ok" and r["valid"]["step"] == 3 and math.isfinite(r["score"])
        saved = json.loads((Path(r["run"]) / "config.json").read_text())
        assert saved["train"]["lr"] == r["lr"] and saved["train"]["steps"] == 3
        key = {"ldlm": "diff", "ar": "nll", "mdlm": "nelbo"}[r["algo"]]
        assert key in r["valid"]
        if r["algo"] != "ldlm":
            assert r["score"] == r["valid"][key]
    for name in ("micro", "micro-ar", "micro-mdlm"):
        rs = {r["lr"]: r["score"] for r in res["runs"] if r["config_name"] == name}
        assert rs[1e-3] != rs[4e-3]  # the learning rate reached the optimizer
        assert res["best"][name]["lr"] == min(rs, key=rs.get) and res["best"][name]["at_edge"]
    saved = json.loads(out.read_text())
    assert saved["best"] == json.loads(json.dumps(res["best"]))
    assert saved["machine"]["command"] == "bench/lr_sweep.py " + " ".join(args)
    table = out.with_suffix(".md").read_text()
    for name, metric in (("micro", "objective"), ("micro-ar", "nll"), ("micro-mdlm", "nelbo")):
        b = res["best"][name]
        assert f"| {name} | `{metric}` | " in table and f"**{b['score']:.4f}** | {b['lr']:g} | yes: the optimum" in table

    def no_training(self):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("ldlm.trainer.Trainer.train", no_training)
    again = lr_sweep.main(args)
    assert [r["score"] for r in again["runs"]] == [r["score"] for r in res["runs"]]
    table = out.with_suffix(".md").read_text()
    out.with_suffix(".md").unlink()
    lr_sweep.main(["--report", str(out)])  # re-rendered from the JSON alone
    assert out.with_suffix(".md").read_text() == table
    # --widen 1: every config's optimum was at an end, so each gets the next rate beyond it, nothing else
    monkeypatch.undo()
    wide = lr_sweep.main([*args[:-1], "1"])
    added = [(r["config_name"], r["lr"]) for r in wide["runs"][len(res["runs"]):]]
    assert added == [(n, res["best"][n]["lr"] * (2 if res["best"][n]["lr"] == 4e-3 else 0.5))
                     for n in ("micro", "micro-ar", "micro-mdlm")]


def test_readme_and_benchmarks_tables_equal_their_committed_results(root):
    """Every generated block of README.md and BENCHMARKS.md is what bench/report.py renders from the
    committed JSON it names: a hand-edited number, or a JSON changed without --update, fails here."""
    import report

    docs = [str(Path(root) / "README.md"), str(Path(root) / "BENCHMARKS.md")]
    assert report.main(["--check", *docs]) == 0
    blocks = [m.group(2) for d in docs for m in report.BLOCK.finditer(Path(d).read_text())]
    assert {"bench/results/params.json", "bench/results/frontier.json", "bench/results/speed.json",
            "bench/results/ablation.json"} <= set(blocks)


def test_report_update_and_check_round_trip(root, tmp_path, capsys):
    import shutil

    import report

    res = tmp_path / "params.json"
    shutil.copy(Path(root) / "bench/results/params.json", res)
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n\n<!-- report: {res} table -->\nstale\n<!-- /report -->\n\noutro\n")
    assert report.main(["--check", str(doc)]) == 1 and "--update" in capsys.readouterr().err
    assert report.main(["--update", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n\n") and text.endswith("<!-- /report -->\n\noutro\n") and "stale" not in text
    assert "| `configs/tiny.yaml` | LDLM | 12,377,978 |" in text
    assert report.main(["--check", str(doc)]) == 0
    doc.write_text(text.replace("12,377,978", "12,377,979"))  # a hand edit
    assert report.main(["--check", str(doc)]) == 1


def test_report_collects_a_trained_run_with_its_evaluation(root, random_lm, tmp_path):
    import json

    import report
    from ldlm.cli import main as cli

    run = tmp_path / "ar"
    assert cli(["train", "--config", f"{root}/configs/micro-ar.yaml", "--out", str(run), "--quiet",
                f"data.cache_dir={tmp_path / 'cache'}", "train.steps=4", "train.lr=3e-3"]) == 0
    assert cli(["sample", "--ckpt", str(run), "--num", "4", "--out", str(run / "samples.jsonl")]) == 0
    assert cli(["eval", str(run / "samples.jsonl"), "--eval-lm", random_lm, "--out", str(run / "eval.json")]) == 0
    out = tmp_path / "baselines.json"
    res = report.collect(out, [f"AR={run}"], None)
    row = res["rows"][0]
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    ev = json.loads((run / "eval.json").read_text())
    assert row["lr"] == 3e-3 and row["steps"] == 4 and row["params"] == start["params"]
    assert row["output_vocab"] == start["output_vocab"] and row["valid"]["step"] == 4
    table = report.render(out)
    assert f"NLL {row['valid']['nll']:.2f}" in table and f"| AR | {ev['rows']['samples']['gen_ppl']:.1f} |" in table
    assert f"{row['params']['non_embedding']:,}" in table and "| 0.003 |" in table


def test_params_script_counts_what_training_reports(root, tmp_path):
    import params
    import torch

    from ldlm.config import load_config
    from ldlm.data import build_corpus
    from ldlm.trainer import setup_model

    out = tmp_path / "params.json"
    cfg = f"{root}/configs/micro-mdlm.yaml"
    res = params.main(["--configs", cfg, "--set", f"data.cache_dir={tmp_path}", "--out", str(out)])
    row = res["rows"][0]
    model = setup_model(load_config(cfg, [f"data.cache_dir={tmp_path}"]), torch.device("cpu"))
    model.prepare(build_corpus(model.cfg.data, model.tokenizer, model.cfg.model.lm), "cpu")
    assert {k: row[k] for k in ("embedding", "non_embedding", "frozen", "trainable")} == model.param_counts()
    assert row["output_vocab"] == model.output_vocab_size() < row["tokenizer_vocab"] / 4
    assert f"| {row['trainable']:,} |" in out.with_suffix(".md").read_text()


def test_quality_targets_are_checked_in_both_directions():
    import quality

    data = {"gen_ppl": 100.0, "entropy": 3.0}
    row = {"metrics": {"gen_ppl": 240.0, "entropy": 2.9, "mauve": 0.61, "unique_texts": 128, "num": 128}, "empty": 0}
    c = quality.check(row, data, quality.TARGETS["demo"])
    assert all(v["met"] for v in c.values()) and c["ppl_ratio"]["value"] == pytest.approx(2.4)
    assert c["unique_per_256"]["value"] == 256
    worse = {"metrics": {**row["metrics"], "gen_ppl": 260.0, "entropy": 3.2, "mauve": None}, "empty": 1}
    c = quality.check(worse, data, quality.TARGETS["demo"])
    assert [k for k, v in c.items() if v["met"] is False] == ["ppl_ratio", "entropy_gap", "empty"]
    assert c["mauve"]["met"] is None  # unmeasured is not 'met'
    assert not all(v["met"] for v in quality.check(row, data, quality.TARGETS["small"]).values())
    # a re-scored run's autoencoder row is listed right after the run's row, wherever the file keeps it
    rows = [{"label": x} for x in ("a", "b", "b (autoencoder)", "a (autoencoder)", "c (autoencoder)")]
    assert [r["label"] for r in quality.ordered(rows)] == ["a", "a (autoencoder)", "b", "b (autoencoder)",
                                                         "c (autoencoder)"]


def test_quality_script_quick_end_to_end_with_the_autoencoder_row(random_lm, tmp_path):
    import quality

    args = ["--quick", "--threads", "1", "--eval-lm", random_lm, "--out", str(tmp_path), "--target", "demo=ldlm"]
    res = quality.main(args)
    labels = [r["label"] for r in res["rows"]]
    assert labels == ["ldlm", "ldlm (autoencoder)", "ar"]  # AR has no autoencoder
    rows = {r["label"]: r for r in res["rows"]}
    assert rows["ldlm"]["metrics"]["num"] == 16 and rows["ldlm (autoencoder)"]["metrics"]["num"] == 16
    assert rows["ldlm"]["sample"]["steps"] == 10 and "steps" not in rows["ar"]["sample"]
    assert res["checks"]["demo"][0] == "ldlm" and set(res["checks"]["demo"][1]) == set(quality.TARGETS["demo"])
    md = (tmp_path / "quality.md").read_text()
    assert "| data (references) |" in md and "| ldlm (autoencoder) |" in md and "Targets **demo** (row `ldlm`)" in md
    again = quality.main(args)  # same checkpoints and settings: kept, not re-sampled
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in res["rows"]]
    # each row names the processor that scored it, and the report says which rows each scored
    assert {r["scored_on"] for r in res["rows"]} == {benchlib.device_name("cpu")}
    assert f"rows scored on: {benchlib.device_name('cpu')} (ldlm, ar)" in md
    # a later command that scores a new row, with another target, keeps the earlier rows and check and names
    # the earlier command (scoring rewrites the file before the checks are made)
    third = quality.main([*args[:-2], "--run", f"again={rows['ldlm']['run']}", "--target", "small=again"])
    assert [r["label"] for r in third["rows"]] == labels + ["again", "again (autoencoder)"]
    assert set(third["checks"]) == {"demo", "small"} and third["checks"]["small"][0] == "again"
    assert list(third["checks"]["demo"]) == list(res["checks"]["demo"])  # the earlier check, unchanged
    assert third["earlier_commands"] and "--target demo=ldlm" in third["earlier_commands"][-1]
    assert "Targets **demo**" in (tmp_path / "quality.md").read_text() and "rows kept from" in (tmp_path / "quality.md").read_text()
    # --drop removes a kept row with its autoencoder row, and the check made on it; the other rows stay kept
    same = ["--threads", "1", "--eval-lm", random_lm, "--out", str(tmp_path), "--num", "16",
            "--config", str(benchlib.ROOT / "configs" / "micro.yaml"), "--run", f"ar={rows['ar']['run']}"]
    dropped = quality.main(same + ["--drop", "ldlm"])
    assert [r["label"] for r in dropped["rows"]] == ["ar", "again", "again (autoencoder)"]
    assert [r["metrics"] for r in dropped["rows"]][0] == rows["ar"]["metrics"] and set(dropped["checks"]) == {"small"}
    with pytest.raises(SystemExit, match="--drop nope: no such row"):
        quality.main(same + ["--drop", "nope"])
    # --drop with a --run of the same label scores that row afresh instead of keeping it
    redone = quality.main(same + ["--drop", "ar"])
    assert [r["label"] for r in redone["rows"]] == ["again", "again (autoencoder)", "ar"]


def test_reconstruct_round_trips_text_through_the_autoencoder_only(micro_cfg, root):
    from ldlm.config import load_config
    from ldlm.errors import UserError
    from ldlm.generate import reconstruct
    from ldlm.trainer import setup_model

    torch.manual_seed(0)
    model = setup_model(micro_cfg(), torch.device("cpu")).eval()
    texts = ["to be or not to be", "my gracious lord"]
    out = reconstruct(model, texts)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    ar = setup_model(load_config(str(Path(root) / "configs" / "micro-ar.yaml")), torch.device("cpu")).eval()
    with pytest.raises(UserError, match="no autoencoder"):
        reconstruct(ar, texts)


def test_eval_sanity_scores_real_shuffled_and_repeated_text(random_lm, tmp_path):
    import eval_sanity
    import report

    res = eval_sanity.main(["--quick", "--threads", "1", "--eval-lm", random_lm, "--out", str(tmp_path)])
    rows = res["rows"]
    real, shuf = res["examples"]["real"], res["examples"]["shuffled"]
    assert sorted(real[0].split()) == sorted(shuf[0].split()) and real[0] != shuf[0]  # the same words, reordered
    assert rows["repeated"]["unique_texts"] == 1 and rows["real"]["unique_texts"] == 16
    assert rows["shuffled"]["mean_words"] == rows["real"]["mean_words"]
    assert rows["repeated"]["distinct2_set"] < rows["real"]["distinct2_set"]
    md = report.render(tmp_path / "eval-sanity.json", "table")
    assert "| the same passages, words shuffled within each |" in md and "command" not in md


def test_throughput_script_times_the_loop_and_the_bare_step_of_one_trainer(tmp_path):
    import throughput

    res = throughput.main(["--quick", "--threads", "1", "--out", str(tmp_path), "--bare-steps", "2"])
    assert res["steps"] == 20 and len(res["loop_intervals"]) == 3  # 4 intervals of 5 steps, the first left out
    assert res["loop_tok_s"] > 0 and res["bare"]["tokens_per_s"] > 0
    assert res["loop_over_bare"] == pytest.approx(res["loop_tok_s"] / res["bare"]["tokens_per_s"])
    md = (tmp_path / "throughput-micro.md").read_text()
    assert "| training loop (metrics.jsonl) |" in md and "| bare step (`Trainer._step`) |" in md
    from ldlm.precision import native_bf16  # the precision that ran, not the wish (train.bf16 defaults to true)

    assert res["bf16"] is native_bf16("cpu") and f"bf16 {native_bf16('cpu')}" in md


def test_overheads_times_both_ways_and_the_fused_optimizer_updates_as_the_default_does():
    import copy

    import overheads
    from ldlm.trainer import make_optimizer

    _, model = overheads.tiny_model()
    snap = overheads.snapshot(model, 2)
    assert snap["bytes_every"] - snap["bytes_saved"] >= 30522 * 384 * 4  # the readout's word-embedding copy
    adam = overheads.adamw_step(model, 2)
    assert adam["parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert adam["fused (ldlm)"]["n"] == adam["foreach (torch's default)"]["n"] == 2
    # the fused kernel is the same update: one step from the same state and gradients, both ways
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    after = []
    for fused in (False, True):
        m = copy.deepcopy(net)
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        make_optimizer(m, overheads._TC, fused=fused).step()
        after.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.allclose(after[0], after[1], atol=1e-7) and not torch.equal(after[0], torch.cat(
        [p.detach().flatten() for p in net.parameters()]))
    assert make_optimizer(net, overheads._TC).defaults["fused"]  # on the CPU by default


def test_spread_table_puts_the_shared_settings_side_by_side(tmp_path):
    import spread_table

    def sweep(name, labels, ppl):
        m = {"mean": ppl, "std": 1.5, "min": ppl - 2, "max": ppl + 2}
        rows = [{"label": lab, "gen_ppl": m, "entropy": {**m, "mean": 3.1}, "mauve": {**m, "mean": 0.5, "std": 0.1},
                 "distinct2_set": {**m, "mean": 0.35}} for lab in labels]
        (tmp_path / name).write_text(json.dumps({"seed_spread": rows}))
        return f"{name}={tmp_path / name}"

    out = spread_table.main([sweep("a.json", ["ns1.0", "ns1.2"], 500.0), sweep("b.json", ["ns1.2", "ns1.4"], 600.0)])
    lines = out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| ns1.2 | 500.0 ± 1.5 | 3.100 | 0.500 ± 0.100 | 0.350 | 600.0 ± 1.5")
    stacked = spread_table.main(["--stack", sweep("a.json", ["ns1.0", "ns1.2"], 500.0),
                                 sweep("b.json", ["ns1.2", "ns1.4"], 600.0)]).splitlines()
    assert len(stacked) == 6 and stacked[5].startswith("| b.json | ns1.4 | 600.0 ± 1.5 | 3.100 | 0.500 ± 0.100 |  | 0.350")
    (tmp_path / "one.json").write_text(json.dumps({"rows": []}))  # a one-seed sweep has no spread: an error
    with pytest.raises(SystemExit, match="no seed_spread"):
        spread_table.main([f"x={tmp_path / 'one.json'}"])


@pytest.mark.parametrize("part", ["train", "attention"])
def test_precision_step_times_each_mode_interleaved_and_restores_the_attention_switch(tmp_path, part):
    import precision_step

    import ldlm.precision as precision
    from ldlm.precision import native_bf16

    res = precision_step.main(["--part", part, "--config", str(benchlib.ROOT / "configs" / "micro.yaml"),
                               "--rounds", "2", "--steps", "1", "--threads", "1", "--out", str(tmp_path)])
    want = list(precision_step.MODES) if part == "train" else [
        "forward fp32", "forward bf16", "forward+backward fp32", "forward+backward bf16"]
    assert list(res["modes"]) == want
    for row in res["modes"].values():
        assert row["step_s"]["n"] == 2 and row["tokens_per_s"] > 0
    assert precision.CPU_BF16_ATTENTION_IN_FP32 is True  # the library's setting again after the benchmark
    md = (tmp_path / f"precision-{part}-micro.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert set(want) <= set(rows)
    assert all(rows[m].endswith("| 1.00× |") for m in want if "bf16" not in m)  # each pass against its fp32 self
    assert res["native_bf16"] is native_bf16("cpu") and ("ldlm runs fp32 on this device" in md) is not res["native_bf16"]
