"""The package documents and types its public surface: docstrings, ``py.typed``, mypy clean."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import atlas
from atlas import cli

ROOT = Path(__file__).resolve().parents[1]


def _public_members(cls):
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in ("__init__", "__enter__", "__exit__", "__repr__"):
            continue
        fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        if callable(fn):
            yield f"{cls.__name__}.{name}", fn


def test_every_public_method_has_a_docstring():
    missing = [q for cls in (atlas.Atlas, atlas.DatasetView) for q, fn in _public_members(cls)
               if not (fn.__doc__ or "").strip()]
    missing += [n for n in atlas.__all__ if callable(getattr(atlas, n)) and not (getattr(atlas, n).__doc__ or "").strip()]
    missing += [f"cli.{n}" for n in cli.__all__ if not (getattr(cli, n).__doc__ or "").strip()]
    assert missing == []


def test_methods_with_progress_say_what_it_counts():
    for cls in (atlas.Atlas, atlas.DatasetView):
        for q, fn in _public_members(cls):
            if "progress" in inspect.signature(fn).parameters:
                assert "progress" in fn.__doc__, q


def test_package_ships_py_typed():
    assert (Path(atlas.__file__).parent / "py.typed").is_file()


def test_sources_pass_mypy(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "mypy_cache"))
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
