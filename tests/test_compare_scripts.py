"""The comparison scripts in benchmarks/ run: the peer harness at tiny sizes, and the xarray
comparison in its smoke mode."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.compare import __main__ as harness  # noqa: E402
from benchmarks.compare.drivers_zarr import TensorstoreDriver  # noqa: E402
from benchmarks.compare.workloads import OPS, WORKLOADS  # noqa: E402


@pytest.mark.parametrize("script", ["compare_xarray.py"])
def test_comparison_script_quick(script):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| load as one stacked dataset (s) |" in p.stdout


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_harness_runs_every_operation_at_tiny_size(workload, tmp_path):
    """One entry point, fresh processes: atlas and h5py measured and verified; tensorstore and
    icechunk measured when installed, listed as "not installed" when not; the floor measured
    but never the best peer."""
    systems = ["atlas", "h5py", "tensorstore", "icechunk", "floor"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--workload", workload, "--systems", ",".join(systems),
                        "--repeats", "1", "--datasets", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / f"compare-{workload}.json").read_text())
    md = (tmp_path / f"compare-{workload}.md").read_text()
    assert res["n"] == 3
    for s in systems:
        r = res["systems"][s]
        if importlib.util.find_spec("zstandard" if s == "floor" else s) is None:
            assert r == {"missing": True}
            continue
        assert set(r["median"]) == set(OPS), s
        skipped = {"stats"} if s == "floor" else set()
        assert all(v > 0 for k, v in r["median"].items() if k != "ingest_rss" and k not in skipped), (s, r["median"])
        assert all(math.isnan(r["median"][k]) for k in skipped), (s, r["median"])
        assert r["verified"], s
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| operation")]
    assert rows and not any(ln.split("|")[-3].strip() == "floor" for ln in rows)
    for label in OPS.values():
        assert label.replace(" (s)", "") in md
    assert "load average at start" in md


def test_harness_lists_a_missing_package_as_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(TensorstoreDriver, "packages", ("no_such_package_for_atlas_tests",))
    res = harness.run("small", ["tensorstore"], 1, 2, str(tmp_path), sys.stderr)
    assert res["systems"]["tensorstore"] == {"missing": True}
    assert "small: tensorstore not installed" in capsys.readouterr().err
    assert "| not installed |" in harness.markdown(res, "machine")
