"""Every script in examples/ runs to completion on its own (in a temporary directory)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


def test_there_are_examples():
    # the examples the README lists; every *.py in examples/ is run below, listed or not
    listed = {"01_quickstart.py", "02_xarray.py", "03_netcdf_folder.py", "04_dask_streaming.py", "05_bulk_reads.py",
              "06_stats.py", "07_codecs_and_formats.py", "08_object_store.py", "09_missing_data.py"}
    assert listed <= {os.path.basename(p) for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_runs(path, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_EXAMPLE_S3")}
    p = subprocess.run([sys.executable, path], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, f"{os.path.basename(path)} failed:\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
    assert p.stdout.strip(), "an example should print what it does"
