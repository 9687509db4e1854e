"""Tests of the experiment harness (wideNN/lab: config, runner, context) with a fake experiment module."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from wideNN.lab.config import ConfigError, apply_overrides, resolve_config
from wideNN.lab.discovery import available_experiments, experiment_summary
from wideNN.lab.results import format_table
from wideNN.lab.runner import run_experiment
from wideNN.lab import results as lab_results

# A fake experiment: computes `n` measurements m0..m{n-1} through ctx.cached, logging
# every actual computation to `calls_file`, checks results.json parses after every
# record, and raises after measurement `fail_at` (simulating a crash mid-run).
FAKE = textwrap.dedent(
    '''
    """Fake experiment for harness tests."""
    import json

    DEFAULTS = {
        "seed": 0,
        "n": 3,
        "scale": 1.0,
        "names": ["a"],
        "opt": {"lr": 0.1, "steps": 2},
        "extra": None,
        "data_dir": None,
        "fail_at": -1,
        "calls_file": "",
        "flag": False,
    }

    def run(cfg, ctx):
        for i in range(cfg["n"]):
            def compute(i=i):
                with open(cfg["calls_file"], "a") as f:
                    f.write(f"m{i}\\n")
                return {"value": i * cfg["scale"], "vec": [i, i + 1]}
            ctx.cached(f"m{i}", compute)
            ctx.add_row(f"m{i}", {"i": i, "value": i * cfg["scale"]})
            on_disk = json.loads((ctx.out_dir / "results.json").read_text())
            assert on_disk["results"][f"m{i}"]["value"] == i * cfg["scale"]
            if i == cfg["fail_at"]:
                raise RuntimeError("simulated crash")
        ctx.record("total", sum(ctx.get(f"m{i}")["value"] for i in range(cfg["n"])))
    '''
)


@pytest.fixture
def exp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "experiments"
    d.mkdir()
    (d / "fake.py").write_text(FAKE)
    monkeypatch.setenv("WIDENN_EXPERIMENTS_DIR", str(d))
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    return d


def _config(tmp_path: Path, **keys) -> Path:
    cfg = {"experiment": "fake", "calls_file": str(tmp_path / "calls.txt"), **keys}
    p = tmp_path / "fake_cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _calls(tmp_path: Path) -> list[str]:
    p = tmp_path / "calls.txt"
    return p.read_text().split() if p.exists() else []


# ---------------------------------------------------------------- validation


def test_defaults_fill_in_and_int_accepted_for_float():
    defaults = {"a": 1.0, "b": [1], "c": {"d": 2}, "e": None}
    r = resolve_config({"experiment": "x", "a": 3}, defaults)
    assert r == {"experiment": "x", "a": 3.0, "b": [1], "c": {"d": 2}, "e": None}
    assert isinstance(r["a"], float)


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'scal'.*did you mean 'scale'"):
        resolve_config({"experiment": "x", "scal": 2.0}, {"scale": 1.0})


def test_unknown_nested_key_named_with_dots():
    with pytest.raises(ConfigError, match=r"unknown config key 'opt.step'.*did you mean 'opt.steps'"):
        resolve_config({"experiment": "x", "opt": {"step": 3}}, {"opt": {"lr": 0.1, "steps": 2}})


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("n", 2.5, r"'n': expected int, got float"),
        ("n", True, r"'n': expected int, got bool"),
        ("scale", "big", r"'scale': expected float, got str"),
        ("flag", 1, r"'flag': expected bool, got int"),
        ("names", "a", r"'names': expected list"),
        ("names", ["a", 3], r"'names\[1\]': expected str, got int"),
        ("opt", {"lr": "fast"}, r"'opt.lr': expected float"),
    ],
)
def test_wrong_types_name_the_key(key, value, match):
    defaults = {"n": 3, "scale": 1.0, "flag": False, "names": ["a"], "opt": {"lr": 0.1}}
    with pytest.raises(ConfigError, match=match):
        resolve_config({"experiment": "x", key: value}, defaults)


def test_yaml11_scientific_notation_is_a_float():
    # PyYAML reads "1e-3" as a string; a float key must still accept it.
    r = resolve_config(yaml.safe_load("experiment: x\nlr: 1e-3\n"), {"lr": 0.1})
    assert r["lr"] == 1e-3


def test_none_default_and_empty_list_accept_anything():
    r = resolve_config({"experiment": "x", "any": {"k": [1, "s"]}, "lst": [1, "two"]}, {"any": None, "lst": []})
    assert r["any"] == {"k": [1, "s"]} and r["lst"] == [1, "two"]


def test_missing_data_dir_names_key_and_path(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=rf"'data_dir'.*{missing.name}.*does not exist"):
        resolve_config({"experiment": "x", "data_dir": str(missing)}, {"data_dir": None})
    with pytest.raises(ConfigError, match=r"'sub.cache_dir'"):
        resolve_config({"experiment": "x", "sub": {"cache_dir": str(missing)}}, {"sub": {"cache_dir": ""}})
    ok = resolve_config({"experiment": "x", "data_dir": str(tmp_path)}, {"data_dir": None})
    assert ok["data_dir"] == str(tmp_path)


def test_all_errors_reported_together():
    with pytest.raises(ConfigError) as e:
        resolve_config({"experiment": "x", "zzz": 1, "n": "x"}, {"n": 1})
    assert "'zzz'" in str(e.value) and "'n'" in str(e.value)


def test_overrides_parse_yaml_and_reach_nested_keys():
    cfg = apply_overrides({"experiment": "x", "opt": {"lr": 0.1}},
                             ["opt.lr=1e-3", "names=[a, b]", "n=7", "flag=true", "new.deep.key=x"])
    assert cfg["opt"]["lr"] == 1e-3 and cfg["names"] == ["a", "b"] and cfg["n"] == 7 and cfg["flag"] is True
    assert cfg["new"] == {"deep": {"key": "x"}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="'n' is not a mapping"):
        apply_overrides({"n": 3}, ["n.x=1"])


def test_unknown_experiment_suggests_name(exp_dir: Path):
    with pytest.raises(ConfigError, match=r"no experiment 'fak'.*did you mean 'fake'"):
        run_experiment({"experiment": "fak"}, quiet=True)


def test_cuda_unavailable_is_a_clear_error(exp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_experiment(_config(tmp_path), out_dir=tmp_path / "out", device="cuda", quiet=True)
    assert not (tmp_path / "out").exists()  # failed before touching the output folder


# ---------------------------------------------------------------- running, outputs, resume


def test_run_writes_config_results_table(exp_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    ctx = run_experiment(_config(tmp_path), out_dir=out, overrides=["scale=2"], quiet=True)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["scale"] == 2.0 and cfg["opt"] == {"lr": 0.1, "steps": 2} and cfg["experiment"] == "fake"
    res = json.loads((out / "results.json").read_text())
    assert res["results"]["total"] == 6.0
    assert [r["i"] for r in res["rows"].values()] == [0, 1, 2]
    meta = res["metadata"]
    assert meta["status"] == "complete" and meta["seed"] == 0 and meta["device"] == "cpu"
    assert {"wideNN", "torch", "gpytorch", "python"} <= set(meta["versions"])
    assert meta["wall_time_s"] >= 0 and meta["start_time"] and meta["device_name"]
    table = (out / "table.txt").read_text()
    assert table.splitlines()[0].split() == ["i", "value"] and len(table.splitlines()) == 5
    assert ctx.rows == list(res["rows"].values())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_crash_then_resume_skips_finished_keys(exp_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    cfg = _config(tmp_path, n=4)
    # The crash is injected by an override, which changes the config; the resumed
    # run must see an equal config, so the crash is raised from the module instead.
    (exp_dir / "fake.py").write_text(FAKE.replace('cfg["fail_at"]', "1"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(cfg, out_dir=out, quiet=True)
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "failed" and "simulated crash" in res["metadata"]["error"]
    assert set(res["results"]) == {"m0", "m1"}
    assert _calls(tmp_path) == ["m0", "m1"]

    (exp_dir / "fake.py").write_text(FAKE)
    ctx = run_experiment(cfg, out_dir=out, quiet=True)
    assert _calls(tmp_path) == ["m0", "m1", "m2", "m3"]  # m0, m1 not recomputed
    assert ctx.get("total") == 6.0
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete" and res["metadata"]["sessions"] == 2

    run_experiment(cfg, out_dir=out, quiet=True)  # everything done: nothing recomputed
    assert len(_calls(tmp_path)) == 4


def test_cached_returns_stored_form_on_fresh_and_resumed_runs(exp_dir: Path, tmp_path: Path):
    (exp_dir / "tens.py").write_text(textwrap.dedent(
        '''
        import torch
        DEFAULTS = {}
        def run(cfg, ctx):
            v = ctx.cached("t", lambda: {"x": torch.arange(3.0), "bad": float("nan")})
            ctx.record("seen", v)
        '''))
    out = tmp_path / "out"
    for _ in range(2):
        ctx = run_experiment({"experiment": "tens"}, out_dir=out, quiet=True)
        assert ctx.get("seen") == {"x": [0.0, 1.0, 2.0], "bad": None}
    json.loads((out / "results.json").read_text())  # strict JSON: NaN was stored as null
    assert "NaN" not in (out / "results.json").read_text()


def test_config_mismatch_refused_unless_fresh(exp_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    cfg = _config(tmp_path)
    run_experiment(cfg, out_dir=out, quiet=True)
    with pytest.raises(ConfigError, match=r"different config(.|\n)*scale: 1.0 -> 3.0(.|\n)*--fresh"):
        run_experiment(cfg, out_dir=out, overrides=["scale=3"], quiet=True)
    assert _calls(tmp_path) == ["m0", "m1", "m2"]
    ctx = run_experiment(cfg, out_dir=out, overrides=["scale=3"], fresh=True, quiet=True)
    assert _calls(tmp_path)[3:] == ["m0", "m1", "m2"] and ctx.get("total") == 9.0
    assert yaml.safe_load((out / "config.yaml").read_text())["scale"] == 3.0


def test_results_write_is_atomic(exp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A crash inside a write (here: os.replace failing) leaves the previous results.json intact."""
    out = tmp_path / "out"
    real_replace = os.replace
    writes = {"n": 0}

    def flaky_replace(src, dst):
        if str(dst).endswith("results.json"):
            writes["n"] += 1
            if writes["n"] >= 4:  # start, m0, row m0 succeed; the disk dies writing m1
                raise OSError("disk died")
        return real_replace(src, dst)

    monkeypatch.setattr(lab_results.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk died"):
        run_experiment(_config(tmp_path), out_dir=out, quiet=True)
    res = json.loads((out / "results.json").read_text())
    assert "m0" in res["results"] and "m1" not in res["results"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_default_out_dir_is_runs_config_stem(exp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    run_experiment(_config(tmp_path), quiet=True)
    assert (tmp_path / "runs" / "fake_cfg" / "results.json").is_file()


def test_savefig_table_and_listing(exp_dir: Path, tmp_path: Path):
    (exp_dir / "figs.py").write_text(textwrap.dedent(
        '''
        """Draws one figure."""
        from wideNN import plotting as wp
        DEFAULTS = {"seed": 3}
        def run(cfg, ctx):
            fig, ax = wp.figure()
            slope = wp.loglog_fit(ax, [1, 2, 4, 8], [1, 0.5, 0.25, 0.125], label="err")
            wp.finish(ax, xlabel="width", ylabel="error")
            ctx.record("slope", slope)
            ctx.savefig(fig, "fit")
            ctx.table([{"name": "slope", "value": slope}], columns=["name", "value"])
        '''))
    out = tmp_path / "out"
    ctx = run_experiment({"experiment": "figs"}, out_dir=out, quiet=True)
    assert ctx.seed == 3 and ctx.get("slope") == pytest.approx(-1.0)
    assert (out / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["figures"] == ["fit.png"]
    assert "slope" in (out / "table.txt").read_text()
    assert available_experiments() == ["fake", "figs"]
    assert experiment_summary("figs") == "Draws one figure."


def test_format_table_aligns_numbers_right():
    text = format_table([{"a": "x", "b": 1.23456}, {"a": "long", "b": 10}])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b"] and lines[2].endswith("1.235") and lines[3].endswith("10")
    assert len(lines[2]) == len(lines[3])
