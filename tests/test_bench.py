"""Fast checks of the benchmark scripts' logic (no models): the headline ratio rule, statistics,
the ablation's variants and resume check. The scripts themselves are smoke-tested with --quick."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import ablation  # noqa: E402
import benchlib  # noqa: E402
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
    assert [frontier.label(g) for g in frontier.grid("mdlm", a)] == ["S4 T1.0", "S16 T1.0"]
    assert frontier.grid("ar", frontier.parse_args([]))[-1] == {"temperature": 1.0, "top_p": 0.95}


def test_ablation_variants_are_valid_configs(root):
    from ldlm.config import load_config

    vs = ablation.variants(0, 0.5)
    assert {"full", "naive", "ce-decoder", "no-warmup", "uniform-t", "no-dec-noise", "two-stage", "full-seed2",
            "naive-seed2"} == set(vs)
    cfgs = {n: load_config(str(Path(root) / "configs" / "tiny.yaml"), o) for n, (_, o) in vs.items()}
    assert cfgs["two-stage"].recipe.two_stage == 0.5 and cfgs["full-seed2"].train.seed == 1
    assert cfgs["naive"].recipe.decoder_loss == "ce" and cfgs["naive"].recipe.timesteps == "uniform"
    assert ablation.config_diff(cfgs["full"].to_dict(), cfgs["full"].to_dict()) == []
    assert ablation.config_diff(cfgs["full"].to_dict(), cfgs["uniform-t"].to_dict()) == ["recipe.timesteps"]
