"""The CLI and run folders against bad input: every problem is one line naming the key or path,
exit 2, before the output folder is created or changed; interrupts and empty runs are clear."""
from __future__ import annotations

import json
import os
import stat
import textwrap
import time
from pathlib import Path

import pytest

import wideNN
from wideNN.lab.cli import main
from wideNN.lab.config import ConfigError, load_config, resolve_config

REPO = Path(wideNN.__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quickstart.yaml")

FAKE = textwrap.dedent(
    '''
    """Fake experiment for CLI robustness tests."""
    DEFAULTS = {"mode": "ok", "n": 1}
    def run(cfg, ctx):
        if cfg["mode"] == "interrupt":
            ctx.record("first", 1)
            raise KeyboardInterrupt
        if cfg["mode"] == "skip":
            ctx.record("skipped", {"row a": "no data under /nowhere", "row b": "no data"})
            return
        ctx.record("value", cfg["n"])
        ctx.add_row("r", {"n": cfg["n"]})
    '''
)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "exps"
    d.mkdir()
    (d / "fake.py").write_text(FAKE)
    monkeypatch.setenv("WIDENN_EXPERIMENTS_DIR", str(d))
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    cfg = tmp_path / "fake.yaml"
    cfg.write_text("experiment: fake\n")
    return cfg


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("setting, message", [
    ("weight_variance=-1", "'weight_variance': must be ≥ 0"),
    ("activation=rleu", "'activation': unknown activation 'rleu' (did you mean 'relu'?)"),
    ("seeds=0", "'seeds': must be ≥ 1"),
    ("widths=[]", "'widths': must not be empty"),
    ("widths=[64, 0]", "'widths': must be ≥ 1"),
    ("weight_variance=.nan", "'weight_variance': expected a finite number"),
    ("bias_variance=.inf", "'bias_variance': expected a finite number"),
    ("steps=-5", "'steps': must be ≥ 0"),
])
def test_bad_values_exit_2_before_the_folder_exists(setting, message, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["run", QUICK, "--out", str(out), "--set", setting]) == 2
    assert message in _err_line(capsys)
    assert not out.exists()


def test_every_shipped_config_passes_the_value_rules(tmp_path: Path):
    from wideNN.lab.discovery import load_experiment

    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert len(paths) >= 20, paths  # every experiment's small and full config
    for path in paths:
        cfg = load_config(path)
        cfg = {k: (str(tmp_path) if k.endswith("_dir") and v is not None else v) for k, v in cfg.items()}
        resolved = resolve_config(cfg, load_experiment(cfg["experiment"], REPO / "experiments").DEFAULTS)
        assert resolved["experiment"] == cfg["experiment"], path


def test_quadrature_degree_is_capped():
    with pytest.raises(ConfigError, match=r"'quadrature_degree': must be in \[2, 256\]"):
        resolve_config({"experiment": "x", "quadrature_degree": 100000}, {"quadrature_degree": 48})


def test_yaml_duplicate_keys_and_aliases_are_refused_quickly(tmp_path: Path, capsys):
    dup = tmp_path / "dup.yaml"
    dup.write_text("experiment: quickstart\nsteps: 5\nsteps: 50\n")
    assert main(["run", str(dup), "--out", str(tmp_path / "o")]) == 2
    assert "duplicate key 'steps' (line 3)" in _err_line(capsys)
    # the classic "billion laughs": 436 bytes that expand to ~10⁹ list items
    bomb = tmp_path / "bomb.yaml"
    lines = ["experiment: quickstart", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    bomb.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    assert main(["run", str(bomb), "--out", str(tmp_path / "o")]) == 2
    err = _err_line(capsys)
    assert time.perf_counter() - t0 < 5 and len(err) < 300 and "aliases" in err
    assert not (tmp_path / "o").exists()
    big = tmp_path / "big.yaml"
    big.write_text("experiment: quickstart\n# " + "x" * 70000 + "\n")
    assert main(["run", str(big)]) == 2 and "larger than 64 KiB" in _err_line(capsys)


def test_messages_never_print_a_whole_value(tmp_path: Path, capsys):
    assert main(["run", QUICK, "--out", str(tmp_path / "o"), "--set", "activation=" + "x" * 3000]) == 2
    err = _err_line(capsys)
    assert "'activation'" in err and len(err) < 600


def test_out_that_cannot_hold_results(fake: Path, tmp_path: Path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    assert main(["run", str(fake), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in _err_line(capsys)
    assert main(["run", str(fake), "--out", str(a_file / "sub")]) == 2
    assert "is a file, not a folder" in _err_line(capsys)
    assert a_file.read_text() == "keep me"
    # a read-only folder (simulated: the tests may run as root, who can write anywhere)
    from wideNN.lab import runner

    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(runner.os, "access", lambda path, mode: False)
    assert main(["run", str(fake), "--out", str(ro)]) == 2
    assert "not writable" in _err_line(capsys)
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("content", ['[1, 2, 3]', '{"config": [], "results": 5}', '{"results": {}, "rows": []}'])
def test_results_json_of_the_wrong_shape_is_left_alone(content, fake: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(content)
    assert main(["run", str(fake), "--out", str(out)]) == 2
    assert "not a wideNN results file" in _err_line(capsys)
    assert (out / "results.json").read_text() == content and sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_ctrl_c_is_one_line_and_the_rerun_resumes(fake: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(fake), "--out", str(out), "--set", "mode=interrupt"]) == 130
    err = _err_line(capsys).strip()
    assert err.count("\n") == 0 and "rerun the same command to resume" in err
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "interrupted" and res["results"]["first"] == 1


def test_a_run_whose_every_row_was_skipped_exits_non_zero(fake: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(fake), "--out", str(out), "--set", "mode=skip"]) == 3
    err = _err_line(capsys)
    assert "every row was skipped" in err and "row a: no data under /nowhere" in err
    assert json.loads((out / "results.json").read_text())["metadata"]["status"] == "incomplete"


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_output_files_honour_the_umask(mask, fake: Path, tmp_path: Path):
    old = os.umask(mask)
    try:
        assert main(["run", str(fake), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    finally:
        os.umask(old)
    for name in ("results.json", "config.yaml", "table.txt"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~mask, name


def test_set_before_config_keeps_the_config(fake: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--set", "n=7", str(fake), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["results"]["value"] == 7
    assert main(["run", "--set", "n=7"]) == 2
    assert "give one CONFIG" in _err_line(capsys)


def test_builtin_config_by_name_and_suggestion(tmp_path: Path, capsys, monkeypatch):
    for var in ("WIDENN_EXPERIMENTS_DIR", "WIDENN_CONFIGS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "quickstrt"]) == 2
    assert "did you mean 'quickstart'" in _err_line(capsys)
    # a name resolves (the bad value stops it before any work, so this stays fast)
    assert main(["run", "quickstart", "--set", "seeds=0"]) == 2
    assert "'seeds': must be ≥ 1" in _err_line(capsys)
    assert not (tmp_path / "runs").exists()
