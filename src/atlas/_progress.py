"""Progress reporting for long operations (``progress=`` on ingest, compact and bulk reads).

``progress`` is one of:

* ``False`` / ``None`` (the default everywhere): silent;
* ``True``: a tqdm bar on stderr when tqdm is installed, else a plain one-line bar on
  stderr (redrawn with ``\\r`` at each percent, ended by a newline when closed);
* a callable ``fn(done, total)``: called with the counts after each step, from the
  calling thread (never from a worker thread).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, Union

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
        self._plain = False
        self._drawn = -1
        self._t0 = time.perf_counter()
        if progress is None or progress is False:
            return
        if progress is not True:
            self._fn = progress
            return
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            self._plain = True
            return
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    @property
    def enabled(self) -> bool:
        """Whether anything is reported (callers may skip splitting work into steps when not)."""
        return self._fn is not None or self._bar is not None or self._plain

    def update(self, k: int = 1) -> None:
        """``k`` more steps are done."""
        self.n += k
        if self._fn is not None:
            self._fn(self.n, self.total)
        elif self._bar is not None:
            self._bar.update(k)
        elif self._plain:
            self._draw()

    def _draw(self) -> None:
        pct = 100 if self.total <= 0 else min(100, self.n * 100 // self.total)
        if pct == self._drawn and self.n != self.total:
            return
        self._drawn = pct
        width = 24
        full = width * pct // 100
        bar = "#" * full + "-" * (width - full)
        line = f"{self.desc}: {self.n}/{self.total} {self.unit}s [{bar}] {pct:3d}% {time.perf_counter() - self._t0:.1f} s"
        try:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: progress is never worth an error
            self._plain = False

    def close(self) -> None:
        """Close the bar (if any)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._plain and self._drawn >= 0:
            self._plain = False
            try:
                sys.stderr.write("\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
