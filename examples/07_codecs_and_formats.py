"""Chunk codecs and metadata formats: what Atlas.create accepts, what Atlas.open detects, and
what each choice costs on disk.

Writes the same 120 datasets (a smooth field that compresses well, a noise field that
hardly compresses, a string array and a few attributes each) into:

- three stores, one per chunk codec: ``zstd`` (the default), ``lz4``, ``none``;
- six stores, one per metadata format x compression: ``json`` / ``msgpack`` x ``none`` /
  ``zstd`` / ``lz4``;

reopens every store without saying how it was made, checks that the codec and the
metadata format were detected and that the data reads back identically, and prints the
on-disk sizes.

Run:  python examples/07_codecs_and_formats.py
"""

import os
import tempfile
import time

import numpy as np

import atlas

N_DATASETS = 120
SHAPE, CHUNKS = [48, 96], [24, 48]


def fill_store(store: atlas.Atlas) -> None:
    lat = np.linspace(-1, 1, SHAPE[0])[:, None]
    lon = np.linspace(0, 2 * np.pi, SHAPE[1])[None, :]
    for k in range(N_DATASETS):
        ds = store.create_dataset(f"run_{k:03d}")
        smooth = np.round(20 * np.cos(lat) + 5 * np.sin(lon + k / 10), 1).astype(np.float32)  # 0.1 degC steps
        noise = np.random.default_rng(k).standard_normal(SHAPE).astype(np.float32)
        for name, data in (("smooth", smooth), ("noise", noise)):
            ds.define_array(name, dtype="float32", dims=["y", "x"], shape=SHAPE, chunk_shape=CHUNKS,
                            fill_value=float("nan"))
            ds.write_array(name, [0, 0], data)
        ds.define_array("site", dtype="string", dims=["s"], shape=[3])
        ds.write_array("site", [0], np.array(["Lindenberg", "Payerne", f"mobile-{k}"], dtype=object))
        ds.set_attribute("run", k)
        ds.set_attribute("model", "toy-circulation v2.1")
        ds.set_attribute("started", np.datetime64("2024-06-01T00:00", "ns") + np.timedelta64(k, "h"))
        ds.set_attribute("resolution_km", 12.5)


def bytes_under(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def array_bytes(path: str, array: str) -> int:
    """On-disk bytes of one array name: its folder is arrays/<name>-<hash of the name>/."""
    root = os.path.join(path, "arrays")
    return sum(bytes_under(os.path.join(root, d)) for d in os.listdir(root) if d.rsplit("-", 1)[0] == array)


def check_reads_back(path: str, reference: atlas.Atlas) -> float:
    """Reopen ``path``, compare every array with ``reference``; return the time of a warm read."""
    store = atlas.Atlas.open(path)
    names = store.list_datasets()
    got = {a: store.read_array_across_stacked(a, names) for a in ("smooth", "noise", "site")}
    t0 = time.perf_counter()   # again, timed: the chunk indexes are loaded now, only decoding is left
    for a in got:
        store.read_array_across_stacked(a, names)
    elapsed = time.perf_counter() - t0
    for a, arr in got.items():
        np.testing.assert_array_equal(arr, reference.read_array_across_stacked(a, names))
    assert store.open_dataset("run_007").attributes() == reference.open_dataset("run_007").attributes()
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # 1. Chunk codecs: one store each, same content.
        print(f"{N_DATASETS} datasets, arrays 'smooth' and 'noise' (float32 {SHAPE[0]}x{SHAPE[1]}) "
              "and 'site' (strings)\n")
        print(f"{'codec':8s} {'smooth':>10s} {'noise':>10s} {'site':>8s} {'all arrays':>11s}   read all (warm)")
        sizes = {}
        reference = None
        for codec in ("zstd", "lz4", "none"):
            path = os.path.join(tmp, f"codec_{codec}")
            with atlas.Atlas.create(path, codec=codec) as store:
                fill_store(store)
            reopened = atlas.Atlas.open(path)                        # nothing said about the codec
            assert reopened.codec == codec, (reopened.codec, codec)
            reference = reference or reopened
            elapsed = check_reads_back(path, reference)
            sizes[codec] = {a: array_bytes(path, a) for a in ("smooth", "noise", "site")}
            total = bytes_under(os.path.join(path, "arrays"))
            s = sizes[codec]
            print(f"{codec:8s} {s['smooth']:10,d} {s['noise']:10,d} {s['site']:8,d} {total:11,d}   "
                  f"{1000 * elapsed:5.1f} ms")
        raw = N_DATASETS * SHAPE[0] * SHAPE[1] * 4
        print(f"raw float32 bytes per array: {raw:,d}")
        for codec in ("zstd", "lz4"):
            print(f"  {codec}: smooth {raw / sizes[codec]['smooth']:.1f}x smaller, noise "
                  f"{raw / sizes[codec]['noise']:.2f}x")
        # Smooth data compresses well, zstd more than lz4; noise hardly compresses at all.
        assert sizes["zstd"]["smooth"] < sizes["lz4"]["smooth"] < sizes["none"]["smooth"] / 2
        assert sizes["zstd"]["noise"] > raw * 0.7
        assert sizes["none"]["smooth"] >= raw                      # none: raw bytes + frame headers

        # 2. Metadata: the store's registry (datasets, arrays, attributes) in atlas.meta.
        print(f"\n{'meta_format':12s} {'compression':12s} {'atlas.meta':>11s}   detected by Atlas.open")
        meta_sizes = {}
        for fmt in ("json", "msgpack"):
            for comp in ("none", "zstd", "lz4"):
                path = os.path.join(tmp, f"meta_{fmt}_{comp}")
                with atlas.Atlas.create(path, meta_format=fmt, meta_compression=comp) as store:
                    fill_store(store)
                reopened = atlas.Atlas.open(path)
                detected = (reopened.meta_format, reopened.meta_compression)
                assert detected == (fmt, comp), detected
                check_reads_back(path, reference)
                meta_sizes[fmt, comp] = os.path.getsize(os.path.join(path, "atlas.meta"))
                print(f"{fmt:12s} {comp:12s} {meta_sizes[fmt, comp]:11,d}   {detected}")
        assert meta_sizes["msgpack", "none"] < meta_sizes["json", "none"]
        for fmt in ("json", "msgpack"):
            assert meta_sizes[fmt, "zstd"] < meta_sizes[fmt, "none"] / 3
            assert meta_sizes[fmt, "lz4"] < meta_sizes[fmt, "none"]

        #    How open() knows: a 24-byte header (magic, format byte, compression byte, CRC-32, length).
        with open(os.path.join(tmp, "meta_msgpack_zstd", "atlas.meta"), "rb") as f:
            header = f.read(24)
        print("header of meta_msgpack_zstd/atlas.meta:", header[:8], "format byte", header[8],
              "compression byte", header[9])
        assert header[:8] == b"ATLASMD1" and (header[8], header[9]) == (1, 1)

        # 3. Aliases, and what an unknown name does.
        with atlas.Atlas.create(os.path.join(tmp, "aliases"), codec="uncompressed", meta_format="mp") as store:
            print("\naliases: codec='uncompressed', meta_format='mp' ->", store.codec, store.meta_format)
            assert (store.codec, store.meta_format) == ("none", "msgpack")
        for kwargs in ({"codec": "gzip"}, {"meta_format": "yaml"}, {"meta_compression": "brotli"}):
            try:
                atlas.Atlas.create(os.path.join(tmp, "refused"), **kwargs)
            except ValueError as e:
                print(f"{kwargs} -> ValueError: {e}")
            else:
                raise AssertionError(f"{kwargs} must be refused")
        assert not os.path.exists(os.path.join(tmp, "refused", "atlas.meta"))
        print("ok")


if __name__ == "__main__":
    main()
