"""The peer-comparison scripts that are not asv benchmarks still run (smoke mode)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script", ["compare_xarray.py"])
def test_comparison_script_quick(script):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| load as one stacked dataset (s) |" in p.stdout
