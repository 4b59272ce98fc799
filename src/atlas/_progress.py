"""Progress reporting for long operations (``progress=`` on ingest, compact and bulk reads).

``progress`` is one of:

* ``False`` / ``None`` (the default everywhere): silent;
* ``True``: a tqdm bar on stderr when tqdm is installed, else an INFO line on the
  ``atlas.progress`` logger about every tenth of the way;
* a callable ``fn(done, total)``: called with the counts after each step, from the
  calling thread (never from a worker thread).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Callable, Optional, Union

log = logging.getLogger("atlas.progress")

#: what a ``progress=`` argument may be
ProgressArg = Union[bool, None, Callable[[int, int], Any]]


def check(progress: Any) -> None:
    """Refuse anything that is not a bool, None or a callable (before any work starts)."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return
    raise TypeError(f"progress must be True, False, None or a callable fn(done, total), got {type(progress).__name__}: {progress!r}")


class Progress:
    """Counts finished steps of one operation and reports them as ``progress`` asks."""

    def __init__(self, progress: ProgressArg, total: int, desc: str, unit: str) -> None:
        check(progress)
        self.total = total
        self.n = 0
        self.desc = desc
        self.unit = unit
        self._fn: Optional[Callable[[int, int], Any]] = None
        self._bar: Any = None
        self._every = 0
        self._t0 = time.perf_counter()
        if progress is None or progress is False:
            return
        if progress is not True:
            self._fn = progress
            return
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            self._every = max(1, math.ceil(total / 10))
            return
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    @property
    def enabled(self) -> bool:
        """Whether anything is reported (callers may skip splitting work into steps when not)."""
        return self._fn is not None or self._bar is not None or self._every > 0

    def update(self, k: int = 1) -> None:
        """``k`` more steps are done."""
        self.n += k
        if self._fn is not None:
            self._fn(self.n, self.total)
        elif self._bar is not None:
            self._bar.update(k)
        elif self._every and (self.n % self._every < k or self.n == self.total):
            log.info("%s: %d/%d %ss (%.1f s)", self.desc, self.n, self.total, self.unit, time.perf_counter() - self._t0)

    def close(self) -> None:
        """Close the bar (if any)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
