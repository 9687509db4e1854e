"""Distributed, resumable kernel computation (wideNN.distributed): tiles, store, job, errors.

Multi-process tests start 2–3 gloo processes with ``wideNN.distributed.spawn`` (one OpenMP
thread each); everything is compared with the single-process computation in float64.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import wideNN as wn
from wideNN import distributed as wd

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_workers as workers  # noqa: E402


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# ----------------------------------------------------------------------------- plan and store
def test_plan_upper_triangle_and_round_robin():
    plan = wd.TilePlan(40, 40, 8, symmetric=True)
    tiles = plan.tiles()
    assert len(tiles) == 15 and all(j >= i for i, j in tiles)
    shares = [plan.assign(tiles, r, 3) for r in range(3)]
    assert sorted(t for s in shares for t in s) == sorted(tiles)
    assert {len(s) for s in shares} == {5}
    rect = wd.TilePlan(11, 40, 8, symmetric=False)
    assert len(rect.tiles()) == 2 * 5 and rect.rows(1) == slice(8, 11)
    assert plan.row_partition(2) == [(0, 2), (2, 5)] or plan.row_partition(2) == [(0, 3), (3, 5)]
    with pytest.raises(ValueError, match="larger than the number of tiles"):
        wd.TilePlan(8, 8, 8, symmetric=True).check_world_size(2)
    with pytest.raises(TypeError, match="tile_size"):
        wd.TilePlan(8, 8, 2.5, symmetric=True)


def test_store_is_npy_tiles_with_checksummed_manifest(tmp_path):
    """The store is readable with numpy + json alone and equals the direct kernels to 1e-12;
    the train×train job computes only the upper triangle."""
    x, _, _ = workers.problem()
    res = wd.kernel(workers.arch(), x.flatten(1), store=tmp_path / "k", tile_size=8)
    assert res.computed_total == 15 and res.reused == 0
    man = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert man["complete"] and man["plan"]["symmetric"] and len(man["tiles"]) == 15
    ref = dict(zip(("nngp", "ntk"), workers.arch().kernels(x.flatten(1))))
    for name in ("nngp", "ntk"):
        full = np.zeros((40, 40))
        for key, files in man["tiles"].items():
            i, j = map(int, key.split("_"))
            data = (tmp_path / "k" / files[name]["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == files[name]["sha256"]
            tile = np.load(tmp_path / "k" / files[name]["file"])
            full[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = tile
            full[j * 8:(j + 1) * 8, i * 8:(i + 1) * 8] = tile.T
        assert _rel(torch.from_numpy(full), ref[name]) < 1e-12
        assert _rel(res.store.dense(name), ref[name]) < 1e-12
    assert not list((tmp_path / "k").rglob("*.tmp"))
    again = wd.kernel(workers.arch(), x.flatten(1), store=tmp_path / "k", tile_size=8)
    assert again.computed_total == 0 and again.reused == 15


def test_corrupt_tile_is_detected_and_recomputed(tmp_path):
    x, _, _ = workers.problem()
    res = wd.kernel(workers.flat_kernels, x, store=tmp_path / "k", tile_size=8)
    good = res.store.dense("ntk").clone()
    path = tmp_path / "k" / "tiles" / "1_3.ntk.npy"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF                                 # one flipped byte in the data
    path.write_bytes(bytes(raw))
    with pytest.raises(wd.CorruptTileError, match=r"\(1, 3\) ntk .*SHA-256"):
        wd.TiledStore.open(tmp_path / "k").dense("ntk")
    y = torch.ones(40, 2, dtype=torch.float64)
    for method in ("pcg", "cholesky"):                 # a solve never uses a corrupt tile
        with pytest.raises(wd.CorruptTileError, match="SHA-256"):
            wd.solve(tmp_path / "k", y, component="ntk", method=method, noise_variance=0.1)
    (tmp_path / "k" / "tiles" / "2_2.nngp.npy").unlink()   # and one missing file
    again = wd.kernel(workers.flat_kernels, x, store=tmp_path / "k", tile_size=8)
    assert again.computed_total == 2 and sorted(again.computed) == [(1, 3), (2, 2)]
    assert torch.equal(again.store.dense("ntk"), good)


# ----------------------------------------------------------------------------- multi-process
def _tile_mtimes(store: Path, tiles):
    return {t: [(store / "tiles" / f"{t[0]}_{t[1]}.{c}.npy").stat().st_mtime_ns for c in ("nngp", "ntk")]
            for t in tiles}


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory):
    """The multi-process runs, shared by the tests below since starting processes costs more
    than what they compute: a 2-rank kernel job whose rank 1 is killed at its 3rd tile, then one
    run of 3 gloo ranks that restarts that job and does every equality and bad-input check.
    Returns the folder, rank 0's results, each rank's errors and the killed job's state."""
    root = tmp_path_factory.mktemp("three_ranks")
    killed = {"store": root / "killed", "report": root / "killed_report"}
    try:
        wd.spawn(workers.job_worker, 2, str(killed["store"]), str(killed["report"]), (1, 2))
        killed["died"] = False
    except mp.ProcessExitedException:
        killed["died"] = True
    st = wd.TiledStore.open(killed["store"])
    killed["complete_after_kill"] = st.manifest["complete"]
    killed["done"] = [t for t in st.plan.tiles() if t not in st.missing()]
    killed["mtimes"] = _tile_mtimes(killed["store"], killed["done"])
    out = root / "out.pt"
    wd.spawn(workers.equality_worker, 3, str(root), str(out))
    errors = [json.loads(Path(f"{out}.errors.{r}.json").read_text()) for r in range(3)]
    return root, torch.load(out, weights_only=False), errors, killed


def test_three_ranks_equal_single_process(three_ranks):
    """Kernels (upper-triangle tiles of an image-shaped input through a function kernel) and
    posterior means (NNGP and NTK, Cholesky; NNGP by PCG) from 3 gloo ranks equal the
    single-process results: 1e-12 relative (PCG: to its tolerance)."""
    _, r, _, _ = three_ranks
    x, y, xt = workers.problem()
    arch = workers.arch()
    nngp, ntk = arch.kernels(x.flatten(1))
    assert _rel(r["nngp"], nngp) < 1e-12 and _rel(r["ntk"], ntk) < 1e-12
    for kernel, key, tol in (("nngp", "mean_nngp", 1e-12), ("ntk", "mean_ntk", 1e-12),
                             ("ntk", "mean_ntk_var", 1e-12), ("nngp", "mean_pcg", 1e-10),
                             ("ntk", "mean_ntk_pcg", 1e-10)):
        ref = wn.posterior(arch, x.flatten(1), y, xt.flatten(1), kernel=kernel, noise_variance=0.01,
                           compute_variance=False).mean
        assert _rel(r[key], ref) < tol, key
    assert r["pcg_iterations"] > 1 and r["computed"] == 5        # 15 tiles over 3 ranks


def _pcg_variance_bound(kernel, x, xt, residual, noise=0.01, convention="both"):
    """Per test point, how far a variance can move when z = M⁻¹b is solved to relative residual
    ρ: ẑ − z = −M⁻¹r with ‖r‖ ≤ ρ‖b‖.  NNGP: Δv = bᵀΔz = −(M⁻¹b)ᵀr, so |Δv| ≤ ρ‖b‖‖z‖.
    NTK: v = k_xx − 2b_Kᵀz + zᵀCz and ‖Δz‖ ≤ ρ‖b‖/σ² =: δ (‖M⁻¹‖ ≤ 1/σ², Θ PSD), so
    |Δv| ≤ 2δ(‖b_K‖ + ‖Cz‖) + ‖C‖δ².  (The store's tiles equal the direct kernels to ~1e-15,
    far below these.)"""
    arch, n = workers.arch(), x.shape[0]
    (k, th), (kx, thx) = arch.kernels(x), arch.kernels(x, xt)
    eye = torch.eye(n, dtype=torch.float64)
    if kernel == "nngp":
        return residual * kx.norm(dim=0) * torch.linalg.solve(k + noise * eye, kx).norm(dim=0)
    z = torch.linalg.solve(th + noise * eye, thx)
    c = k + (noise * eye if convention == "both" else 0)
    delta = residual * thx.norm(dim=0) / noise
    return 2 * delta * (kx.norm(dim=0) + (c @ z).norm(dim=0)) + torch.linalg.matrix_norm(c, 2) * delta ** 2


def test_three_ranks_variances_equal_single_process(three_ranks):
    """Posterior variances (and covariances) from 3 ranks against ``wn.posterior``: NNGP and
    NTK-GP by the gathered Cholesky factor to 1e-12 relative; by block PCG (all of a block's
    test points as right-hand sides at once) within the per-point bound its residual implies."""
    _, r, _, _ = three_ranks
    x, y, xt = workers.problem()
    xf, xtf, arch = x.flatten(1), xt.flatten(1), workers.arch()

    def ref(kernel, **kw):
        return wn.posterior(arch, xf, y, xtf, kernel=kernel, noise_variance=0.01, **kw)

    nngp, ntk = ref("nngp", full_covariance=True), ref("ntk")
    assert _rel(r["var_nngp"], nngp.variance) < 1e-12 and _rel(r["cov_nngp"], nngp.covariance) < 1e-12
    assert _rel(r["var_ntk"], ntk.variance) < 1e-12
    assert r["chol_report"].method == "cholesky" and r["chol_report"].blocks == 3   # 11 = 4 + 4 + 3
    rep = r["pcg_report"]
    assert rep.method == "pcg" and rep.blocks == 3 and len(rep.iterations) == 3 and rep.converged
    assert rep.residual < 1e-11 and min(rep.iterations) > 1
    err = (r["var_pcg"] - nngp.variance).abs()
    assert bool((err <= _pcg_variance_bound("nngp", xf, xtf, rep.residual) + 1e-14).all())
    ntk_cov = ref("ntk", full_covariance=True, noise_convention="ntk").covariance
    rep = r["ntk_pcg_report"]
    assert rep.blocks == 1 and rep.converged
    err = (r["cov_ntk_pcg"].diagonal() - ntk_cov.diagonal()).abs()
    assert bool((err <= _pcg_variance_bound("ntk", xf, xtf, rep.residual, convention="ntk") + 1e-14).all())
    assert _rel(r["cov_ntk_pcg"], ntk_cov) < 1e-9


def test_killed_rank_restart_recomputes_only_unfinished_tiles(three_ranks):
    """A rank killed mid-job (2 ranks) leaves the finished tiles checksummed; the restart (on 3
    ranks: the store does not depend on the world size) computes exactly the rest and does not
    rewrite a finished tile; the completed store equals the direct kernels."""
    _, _, _, killed = three_ranks
    done = killed["done"]
    assert killed["died"] and not killed["complete_after_kill"] and 2 <= len(done) < 15
    reports = [json.loads(Path(f"{killed['report']}.restart.{r}.json").read_text()) for r in range(3)]
    assert all(rep["reused"] == len(done) and rep["computed_total"] == 15 - len(done) for rep in reports)
    assert sum(rep["computed"] for rep in reports) == 15 - len(done)
    assert _tile_mtimes(killed["store"], done) == killed["mtimes"]   # finished tiles were not rewritten
    x, _, _ = workers.problem()
    nngp, ntk = workers.arch().kernels(x.flatten(1))
    st = wd.TiledStore.open(killed["store"])
    assert st.manifest["complete"]
    assert _rel(st.dense("nngp"), nngp) < 1e-12 and _rel(st.dense("ntk"), ntk) < 1e-12


def test_bad_inputs_across_ranks_raise_on_every_rank(three_ranks):
    """World size > tiles, ranks with mismatched inputs or variance options, a store of another
    config: the same clear error on every rank, and the existing store is left as it was."""
    root, _, errs, _ = three_ranks
    for e in errs:
        assert "world size 3 is larger than the number of tiles (1 tiles" in e["few_tiles"]
        assert "ranks have mismatched kernel job arguments" in e["mismatch"]
        assert "StoreMismatchError" in e["other_kernel"] and "x1:" in e["other_kernel"]
        assert "ranks have mismatched posterior variance arguments" in e["variance_mismatch"]
    assert not (root / "few").exists() and not (root / "mm").exists()
    st = wd.TiledStore.open(root / "done")
    x, _, _ = workers.problem()
    assert st.manifest["complete"] and _rel(st.dense("nngp"), workers.arch().nngp(x.flatten(1))) < 1e-12


# ----------------------------------------------------------------------------- single-process errors
def test_store_of_another_kernel_is_refused_and_untouched(tmp_path):
    x, _, _ = workers.problem()
    xf = x.flatten(1)
    wd.kernel(workers.arch(), xf, store=tmp_path / "k", tile_size=8)
    snapshot = {p: p.read_bytes() for p in (tmp_path / "k").rglob("*") if p.is_file()}
    other = [
        dict(kern=workers.arch().replace(depth=3), x1=xf),                       # kernel
        dict(kern=workers.arch(), x1=xf + 1e-9),                                  # inputs
        dict(kern=workers.arch(), x1=xf, dtype=torch.float32),                   # dtype
        dict(kern=workers.arch(), x1=xf, tile_size=16),                          # tiling
        dict(kern=workers.arch(), x1=xf, components=("nngp",)),                  # components
    ]
    for kw in other:
        kw.setdefault("tile_size", 8)
        with pytest.raises(wd.StoreMismatchError, match="different kernel or config"):
            wd.kernel(store=tmp_path / "k", **kw)
    assert {p: p.read_bytes() for p in (tmp_path / "k").rglob("*") if p.is_file()} == snapshot


def test_missing_or_read_only_store_folder(tmp_path, monkeypatch):
    x, _, _ = workers.problem()
    with pytest.raises(FileNotFoundError, match="parent folder .* does not exist"):
        wd.kernel(workers.arch(), x.flatten(1), store=tmp_path / "no" / "k", tile_size=8)
    with pytest.raises(FileNotFoundError, match="no tiled kernel store"):
        wd.TiledStore.open(tmp_path / "absent")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:                     # root writes into 0o555 folders anyway
        ro.chmod(0o555)
    else:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    with pytest.raises(PermissionError, match="not writable"):
        wd.kernel(workers.arch(), x.flatten(1), store=ro, tile_size=8)
    ro.chmod(0o755)
    assert not any(ro.iterdir())


def test_kernel_argument_errors(tmp_path):
    x, _, _ = workers.problem()
    with pytest.raises(ValueError, match="description="):
        wd.kernel(lambda a, b: workers.flat_kernels(a, b), x, store=tmp_path / "k")
    with pytest.raises(TypeError, match="x1 must be a floating-point"):
        wd.kernel(workers.arch(), x.long(), store=tmp_path / "k")
    with pytest.raises(ValueError, match="NaN"):
        wd.kernel(workers.arch(), x.flatten(1) * float("nan"), store=tmp_path / "k")
    with pytest.raises(ValueError, match="example shapes"):
        wd.kernel(workers.arch(), x.flatten(1), x.flatten(1)[:, :3], store=tmp_path / "k")
    with pytest.raises(ValueError, match="components"):
        wd.kernel(workers.arch(), x.flatten(1), store=tmp_path / "k", components=("nngp", "cov"))
    with pytest.raises(TypeError, match="kernels"):
        wd.kernel(3, x, store=tmp_path / "k")
    assert not (tmp_path / "k").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nccl_ranks_equal_cpu(tmp_path):
    """One GPU per rank with NCCL: the PCG posterior mean and variances equal the CPU
    single-process ones (the variances within their residual bound)."""
    out = tmp_path / "out.pt"
    wd.spawn(workers.cuda_worker, min(2, torch.cuda.device_count()), str(tmp_path / "k"), str(out),
             backend="nccl")
    x, y, xt = workers.problem()
    ref = wn.posterior(workers.arch(), x.flatten(1), y, xt.flatten(1), kernel="nngp", noise_variance=0.01)
    r = torch.load(out)
    assert _rel(r["mean"], ref.mean) < 1e-10
    bound = _pcg_variance_bound("nngp", x.flatten(1), xt.flatten(1), r["residual"])
    assert bool(((r["variance"] - ref.variance).abs() <= bound + 1e-14).all())


def test_progress_is_per_rank_and_silenced_by_env(monkeypatch):
    group = wd.Group(rank=1, world_size=3, device=torch.device("cpu"))
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    with wd.group.progress(5, "tiles", group) as bar:
        assert bar.disable
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "0")
    with wd.group.progress(5, "tiles", group) as bar:
        assert not bar.disable and bar.desc.startswith("[rank 1/3] tiles") and bar.pos in (1, -1)
