"""Shared pytest configuration."""

from __future__ import annotations

import os

from hypothesis import settings

# Hypothesis: a CI-sized profile, loaded by default (HYPOTHESIS_PROFILE picks another registered one).
settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
