"""FACENMS_CPU_ISA: every clone of the CPU kernels this CPU runs, compared.

Each clone runs in a subprocess of its own (the clone is chosen once per
process). Clones may differ only where a pair's similarity lies within
rounding of the threshold; each one's selection follows the rule.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from procs import child_env
from facenms.core.extension import build_info

SUPPORTED = build_info().get("cpu_isa_supported", "baseline").split(",")
NAMES = {"v4": "x86-64-v4", "v3": "x86-64-v3", "baseline": "baseline"}
THRESHOLDS = (0.5, 0.8)
DTYPES = ("fp32", "fp16", "bf16", "fp64")

CHILD = r"""
import json, sys
import numpy as np, torch, facenms
from facenms.core import nearest, ops
from facenms.core.extension import build_info
from facenms.eval.embeddings import webface_like
from facenms.reference import check_valid
out = {"isa": build_info()["cpu_isa"]}
for dim in (100, 512):
    x, labels = webface_like(1500, dim=dim, seed=dim)
    for name in %(dtypes)r:
        xi = {"fp32": x, "fp16": x.astype(np.float16), "fp64": x.astype(np.float64),
              "bf16": torch.from_numpy(x).bfloat16()}[name]
        for t in %(thresholds)r:
            keep = facenms.select(xi, labels, threshold=t)
            check_valid(xi, labels, keep, t)
            out["%%d %%s %%g" %% (dim, name, t)] = np.asarray(keep).tolist()
        # 64 threshold lanes in one walk, on rows already in rank order
        xt = torch.as_tensor(xi) if name != "bf16" else xi
        n = len(labels)
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(np.bincount(labels))]))
        thr = torch.linspace(0.3, 0.95, 64, dtype=torch.float64)
        bits, counts = ops.nms(xt, torch.arange(n), offsets, thr, 2)
        out["%%d %%s lanes" %% (dim, name)] = bits.tolist()
        # label_issues' first pass: ranked order, centres, cosines
        _, order, off, _ = facenms.core.csr.group(labels, n, xt.device)
        ranked, centres, a, _ = ops.trimmed_centres(xt, order, off, 3)
        out["%%d %%s centres" %% (dim, name)] = [ranked.tolist(), centres.double().tolist(),
                                               a.double().tolist()]
        # label_issues, its search screened (fp32 rows) or not
        for work in (0, 1 << 40):
            nearest.SCREEN_WORK = work
            issues, info = facenms.label_issues(xi, labels, threshold=3.0, return_info=True)
            out["%%d %%s issues %%d" %% (dim, name, work)] = [
                np.asarray(issues).tolist(), info.other_label.tolist(),
                info.other_similarity.tolist()]
json.dump(out, sys.stdout)
"""


def _run(isa, code, *args):
    env = child_env(threads=2)
    env["FACENMS_CPU_ISA"] = isa
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def results():
    out = {}
    for isa in SUPPORTED:
        r = _run(isa, CHILD % dict(dtypes=DTYPES, thresholds=THRESHOLDS))
        assert r.returncode == 0, r.stderr[-3000:]
        out[isa] = json.loads(r.stdout)
    return out


def test_every_clone_runs_as_asked_and_follows_the_rule(results):
    # check_valid ran in each child; here: each ran the clone it was asked for
    assert {isa: r["isa"] for isa, r in results.items()} == {i: NAMES[i] for i in SUPPORTED}


def _near_threshold(x, labels, faces, thresholds, tol=1e-4):
    """Whether every identity of `faces` has a pair within tol of some threshold."""
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c in np.unique(labels[faces]):
        rows = np.flatnonzero(labels == c)
        g = y[rows] @ y[rows].T
        g = g[np.triu_indices(len(rows), 1)]
        if not any(np.any(np.abs(g - t) < tol) for t in thresholds):
            return False
    return True


def test_clones_agree_but_within_rounding_of_the_threshold(results):
    import torch
    from facenms.eval.embeddings import webface_like
    if len(results) < 2:
        pytest.skip("this CPU runs one clone only")
    best = results[SUPPORTED[0]]
    for dim in (100, 512):
        x, labels = webface_like(1500, dim=dim, seed=dim)
        for name in DTYPES:
            xr = {"fp32": x, "fp16": x.astype(np.float16).astype(np.float64), "fp64": x,
                  "bf16": torch.from_numpy(x).bfloat16().double().numpy()}[name]
            xr = xr.astype(np.float64)
            for isa in SUPPORTED[1:]:
                other = results[isa]
                for t in THRESHOLDS:
                    key = "%d %s %g" % (dim, name, t)
                    diff = np.setxor1d(best[key], other[key])
                    assert _near_threshold(xr, labels, diff, [t]), (isa, key, diff[:5])
                key = "%d %s lanes" % (dim, name)
                a, b = np.array(best[key]), np.array(other[key])
                diff = np.flatnonzero(a != b)
                assert _near_threshold(xr, labels, diff, np.linspace(0.3, 0.95, 64)), (
                    isa, key, diff[:5])


def test_clones_agree_on_the_trimmed_centres(results):
    """Float64 sums inside: clones agree to float32 rounding; the ranking may differ
    only where two scores are within rounding of each other, which these sets lack."""
    if len(results) < 2:
        pytest.skip("this CPU runs one clone only")
    best = results[SUPPORTED[0]]
    for isa in SUPPORTED[1:]:
        for dim in (100, 512):
            for name in DTYPES:
                key = "%d %s centres" % (dim, name)
                (r0, c0, a0), (r1, c1, a1) = best[key], results[isa][key]
                assert r0 == r1, (isa, key)
                np.testing.assert_allclose(c1, c0, atol=1e-6, err_msg=key)
                np.testing.assert_allclose(a1, a0, atol=1e-6, err_msg=key)


def test_clones_agree_on_the_label_issues(results):
    """Screened or not, every clone flags the same faces with the same nearest other
    identity (float64 inside, so no flag lies within rounding of the threshold here)."""
    best = results[SUPPORTED[0]]
    for isa in SUPPORTED:
        for dim in (100, 512):
            for name in DTYPES:
                want = best["%d %s issues %d" % (dim, name, 0)]
                assert len(want[0]) > 5
                for work in (0, 1 << 40):
                    got = results[isa]["%d %s issues %d" % (dim, name, work)]
                    assert got[:2] == want[:2], (isa, dim, name, work)
                    np.testing.assert_allclose(got[2], want[2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("isa", SUPPORTED)
def test_info_shows_the_clone_in_use(isa):
    r = _run(isa, "from facenms.cli import main; main(['info'])")
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("cpu_isa ")]
    assert line and line[0].split()[1] == NAMES[isa]
    assert "cpu_isa_error" not in r.stdout


def _select_cli(isa, tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "l.npy", np.repeat(np.arange(4), 5))
    return _run(isa, "import sys; from facenms.cli import main; sys.exit(main(sys.argv[1:]))",
                "select", "--features", str(tmp_path / "x.npy"), "--labels",
                str(tmp_path / "l.npy"), "--threshold", "0.5", "--out",
                str(tmp_path / "k.npy"))


def test_unknown_level_is_refused_in_one_line(tmp_path):
    r = _select_cli("v5", tmp_path)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "FACENMS_CPU_ISA=v5 is not a clone level" in err[0], r.stderr
    assert not (tmp_path / "k.npy").exists()
    info = _run("v5", "from facenms.cli import main; main(['info'])").stdout
    assert "cpu_isa_error" in info and "v4" in info


def test_a_level_this_cpu_lacks_is_refused(tmp_path):
    missing = [i for i in NAMES if i not in SUPPORTED]
    if not missing:
        pytest.skip("this CPU runs every clone")
    r = _select_cli(missing[0], tmp_path)
    assert r.returncode != 0
    assert "this CPU cannot run the %s clone" % NAMES[missing[0]] in r.stderr
