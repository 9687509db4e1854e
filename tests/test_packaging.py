"""The package as installed: the wheel ships every experiment and config, named configs and user scripts run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import wideNN
from wideNN.lab.config import ConfigError
from wideNN.lab.discovery import available_experiments, configs_dir, experiments_dir, find_config
from wideNN.lab.runner import run_experiment

REPO = Path(wideNN.__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py") if not p.stem.startswith("_"))
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WIDENN_EXPERIMENTS_DIR", "WIDENN_CONFIGS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")


def test_checkout_uses_its_own_folders(no_env):
    assert experiments_dir() == REPO / "experiments" and configs_dir() == REPO / "configs"
    assert available_experiments() == EXPERIMENTS and len(EXPERIMENTS) >= 9


def test_config_found_by_name_from_any_folder(no_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    want = REPO / "configs" / "quickstart.yaml"
    assert find_config("quickstart") == want
    assert find_config("quickstart.yaml") == want
    assert find_config("configs/quickstart.yaml") == want  # the README command, outside a checkout
    own = tmp_path / "quickstart.yaml"
    own.write_text("experiment: quickstart\n")
    assert find_config("quickstart.yaml").resolve() == own  # a file that exists always wins
    with pytest.raises(ConfigError, match=r"'quickstrt'.*did you mean 'quickstart'"):
        find_config("quickstrt")


USER_EXPERIMENT = textwrap.dedent(
    '''
    """Squares a number."""
    DEFAULTS = {"x": 3}
    def run(cfg, ctx):
        ctx.record("square", cfg["x"] ** 2)
    '''
)


def test_user_script_named_by_path(no_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "square.py").write_text(USER_EXPERIMENT)
    cfg = mine / "sq.yaml"
    cfg.write_text("experiment: square.py\nx: 7\n")  # relative to the config's folder
    monkeypatch.chdir(REPO)
    ctx = run_experiment(cfg, out_dir=tmp_path / "out", quiet=True)
    assert ctx.get("square") == 49
    # the same script found through --experiments-dir by its module name
    cfg2 = tmp_path / "sq2.yaml"
    cfg2.write_text("experiment: square\n")
    assert run_experiment(cfg2, out_dir=tmp_path / "out2", experiments_dir=mine, quiet=True).get("square") == 9
    cfg.write_text("experiment: gone.py\n")
    with pytest.raises(ConfigError, match=r"'experiment'.*gone\.py.*does not exist"):
        run_experiment(cfg, out_dir=tmp_path / "out3", quiet=True)
    assert not (tmp_path / "out3").exists()


def _build_wheel(dest: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(REPO)],
        capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip()[-300:]}")
    (wheel,) = dest.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_ships_every_experiment_and_config(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"wideNN/lab/experiments/{e}.py" for e in EXPERIMENTS} <= names
    assert {f"wideNN/lab/configs/{c}" for c in CONFIGS} <= names
    assert "wideNN/datasets/digits.csv.gz" in names and "wideNN/lab/cli.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "experiments/", "configs/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "wideNN = wideNN.lab.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_installed_wheel_lists_and_runs(wheel: Path, tmp_path: Path):
    """Installed outside the checkout: every experiment listed, a named config runs."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDENN_")}
    env.update(PYTHONPATH=str(site), WIDENN_NO_PROGRESS="1", MPLBACKEND="Agg")
    work = tmp_path / "work"
    work.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "wideNN", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    for e in EXPERIMENTS:
        assert any(line.startswith(e) for line in listed.stdout.splitlines()), e
    assert str(site / "wideNN" / "lab" / "configs" / "quickstart.yaml") in listed.stdout
    ran = cli("run", "quickstart", "--out", "q", "--quiet", "--set", "widths=[8]", "seeds=1", "steps=5")
    assert ran.returncode == 0, ran.stderr
    res = json.loads((work / "q" / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    assert cli("--version").stdout.strip() == f"wideNN {wideNN.__version__}"
