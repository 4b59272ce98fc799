"""The version subcommands of the ``atlas`` command line (registered by ``cli.build_parser``).

::

    atlas log STORE [--json]                        the retained versions, oldest first, with their tags
    atlas tag STORE NAME [--version N]              name a version (default: the current one)
    atlas tag STORE NAME --delete                   remove a tag
    atlas expire STORE [--keep-last K] [--older-than AGE]   drop versions (tagged and latest ones stay)

``info``, ``ls`` and ``stats`` take ``--version N`` / ``--tag NAME`` (see :func:`add_version_options`).
"""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_version_options(parser: argparse.ArgumentParser) -> None:
    """``--version N`` and ``--tag NAME``: look at a past version instead of the current state."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--version", dest="at_version", type=int, default=None, metavar="N",
                   help="show version N (see `atlas log`) instead of the current state")
    g.add_argument("--tag", dest="at_tag", default=None, metavar="NAME", help="show the version tagged NAME")


def open_store(path: str, args: argparse.Namespace) -> Any:
    """The store at ``path``, or a past version of it when ``--version``/``--tag`` were given."""
    from .store import Atlas

    return Atlas.open(path, version=getattr(args, "at_version", None), tag=getattr(args, "at_tag", None))


def _age(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected an age like 30m, 12h, 7d or 2w, got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def _cmd_log(args: argparse.Namespace) -> int:
    from .cli import _print_json, _table

    store = open_store(args.store, argparse.Namespace())
    by_version: dict[int, list[str]] = {}
    for name, v in store.tags().items():
        by_version.setdefault(v, []).append(name)
    rows = []
    for h in store.history():
        tags = sorted(t for v in (h["version"], *h["same_as"]) for t in by_version.get(v, []))
        rows.append({**h, "time": h["time"].isoformat(), "tags": tags})
    if args.json:
        _print_json(rows)
        return 0
    table = [["version", "time (UTC)", "added", "changed", "deleted", "tags", "message"]]
    for r in rows:
        same = f" (= {', '.join(map(str, r['same_as']))})" if r["same_as"] else ""
        table.append([f"{r['version']}{same}", r["time"][:23].replace("T", " "), str(r["added"]), str(r["changed"]),
                      str(r["deleted"]), ",".join(r["tags"]) or "-", r["message"] or ""])
    print(_table(table))
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args.store, argparse.Namespace())
    if args.delete:
        if args.version is not None:
            raise ValueError("--delete takes no --version")
        store.delete_tag(args.name)
        print(f"deleted tag {args.name!r} of {store.location}")
        return 0
    store.tag(args.name, args.version)
    print(f"tagged version {store.tags()[args.name]} of {store.location} as {args.name!r}")
    return 0


def _cmd_expire(args: argparse.Namespace) -> int:
    if args.keep_last is None and args.older_than is None:
        raise ValueError("give --keep-last K and/or --older-than AGE (nothing is expired by default)")
    store = open_store(args.store, argparse.Namespace())
    gone = store.expire(older_than=args.older_than, keep_last=args.keep_last)
    left = [h["version"] for h in store.history()]
    print(f"expired {len(gone)} version(s) of {store.location}: {', '.join(map(str, gone)) or 'none'}; "
          f"{len(left)} kept (run `atlas compact` to reclaim their space)")
    return 0


def register(sub: Any, verbose: argparse.ArgumentParser) -> None:
    """Add ``log``, ``tag`` and ``expire`` to the subcommands ``sub``."""
    from .cli import _positive_int

    s = sub.add_parser("log", parents=[verbose], help="the retained versions, oldest first, with their tags")
    s.add_argument("store", metavar="STORE")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_log)

    s = sub.add_parser("tag", parents=[verbose], help="name a version so that expiry keeps it (or --delete a tag)")
    s.add_argument("store", metavar="STORE")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--version", type=int, default=None, metavar="N", help="the version to tag (default: the current one)")
    s.add_argument("--delete", action="store_true", help="remove the tag NAME instead")
    s.set_defaults(func=_cmd_tag)

    s = sub.add_parser("expire", parents=[verbose],
                       help="drop old versions (never a tagged one or the latest); compact then reclaims their space")
    s.add_argument("store", metavar="STORE")
    s.add_argument("--keep-last", type=_positive_int, default=None, metavar="K", help="keep the K newest versions")
    s.add_argument("--older-than", type=_age, default=None, metavar="AGE",
                   help="drop only versions older than AGE (30m, 12h, 7d, 2w)")
    s.set_defaults(func=_cmd_expire)
