"""Shared pytest configuration."""

from __future__ import annotations

import os

from hypothesis import settings

# Hypothesis: a CI-sized profile, loaded by default (HYPOTHESIS_PROFILE picks another registered one).
settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # hypothesis' failure report imports mypy_extensions, whose DeprecationWarning would turn a
    # plain test failure into an INTERNALERROR under filterwarnings = error
    config.addinivalue_line("filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


# ``slow`` tests (e.g. the 300-kill crash loop) run only with --runslow; otherwise reported as skipped.
def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    import pytest

    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
