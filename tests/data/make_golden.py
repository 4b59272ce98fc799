"""Write the golden stores under tests/data/ (run once per format version; the files are committed).

    python tests/data/make_golden.py

tests/test_golden.py opens them with the current library and checks every value, so a
format change that breaks old stores fails the suite.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

import atlas

HERE = os.path.dirname(os.path.abspath(__file__))


def content():
    """The datasets every golden store holds (also imported by the test)."""
    t = np.arange(6, dtype="int64").astype("timedelta64[ns]") * 3600 * 10**9 + np.datetime64("2024-01-01", "ns")
    return {
        "alpha": {
            "arrays": {
                "temp": ("float32", ["y", "x"], [4, 6], [2, 4], float("nan"),
                         np.arange(24, dtype=np.float32).reshape(4, 6) / 4),
                "count": ("int16", ["x"], [6], None, None, np.arange(6, dtype=np.int16) - 3),
                "time": ("timestamp_nanoseconds", ["x"], [6], [4], None, t),
                "label": ("string", ["x"], [6], [4], "", np.array(["a", "bé", "", "ccc", "d", "e"], dtype=object)),
                "scalar": ("uint64", [], [], None, None, np.array(2**63 + 5, dtype=np.uint64)),
            },
            "attrs": {"month": 1, "ok": True, "ratio": 0.25, "site": "KNMI", "nan": float("nan")},
        },
        "beta": {
            "arrays": {
                "temp": ("float64", ["y", "x"], [3, 3], [3, 3], None, np.eye(3)),
            },
            "attrs": {"when": np.datetime64("2020-02-29T12:00:00", "ns")},
        },
    }


def build(path: str, **kw) -> None:
    with atlas.Atlas.create(path, **kw) as store:
        for name, spec in content().items():
            ds = store.create_dataset(name)
            for a, (dtype, dims, shape, chunk, fill, data) in spec["arrays"].items():
                ds.define_array(a, dtype, dims, shape, chunk, fill)
                ds.write_array(a, [0] * len(shape), data)
            for k, v in spec["attrs"].items():
                ds.set_attribute(k, v)
        store.create_dataset("gone").define_array("temp", "float32", ["x"], [2])
    with atlas.Atlas.open(path) as store:  # a second flush, a delete and an overwrite
        store.delete_dataset("gone")
        store.open_dataset("alpha").write_array("count", [0], np.array([9], dtype=np.int16))


STORES = {
    "v1_json": dict(codec="zstd", meta_format="json", meta_compression="none"),
    "v1_msgpack_lz4": dict(codec="lz4", meta_format="msgpack", meta_compression="zstd"),
    "v1_uncompressed": dict(codec="none", meta_format="json", meta_compression="lz4"),
    # format 2 (narrowed index columns, footers in the store's codec), written by the library at 4e8d94b
    "v2_json": dict(codec="zstd", meta_format="json", meta_compression="none"),
}

if __name__ == "__main__":
    for name, kw in STORES.items():
        path = os.path.join(HERE, name)
        if os.path.exists(path):
            if "--force" not in sys.argv:
                sys.exit(f"{path} exists; golden stores are never rewritten (pass --force for a new format version only)")
            shutil.rmtree(path)
        build(path, **kw)
        os.remove(os.path.join(path, "atlas.lock")) if os.path.exists(os.path.join(path, "atlas.lock")) else None
        print("wrote", path)
