"""Quick start: build a small store in a temporary directory, reopen it, print what it reads.

Run:  python examples/01_quickstart.py
"""

import os
import tempfile

import numpy as np

import atlas


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "quickstart_store")

        # 1. Create a store and fill three datasets of one schema. Nothing touches the disk
        #    until the `with` block ends (close() == flush(), the one durability boundary).
        with atlas.Atlas.create(path, codec="zstd") as store:
            for month in (1, 2, 3):
                ds = store.create_dataset(f"2024-{month:02d}")
                ds.define_array("temperature", dtype="float32", dims=["lat", "lon"],
                                shape=[8, 16], chunk_shape=[4, 8], fill_value=float("nan"))
                ds.define_array("time", dtype="timestamp_ns", dims=["t"], shape=[1])
                field = (np.arange(8 * 16, dtype=np.float32).reshape(8, 16) / 10 + month)
                ds.write_array("temperature", [0, 0], field[:, :12].copy())   # last 4 columns stay NaN
                ds.write_array("time", [0], np.array([f"2024-{month:02d}-01"], dtype="datetime64[ns]"))
                ds.set_attribute("month", month)
                ds.set_attribute("station", "KNMI")

        # 2. Reopen: codec and metadata format are detected.
        store = atlas.Atlas.open(path)
        print(store)
        print("datasets:", store.list_datasets())
        print("arrays:  ", store.list_arrays())

        jan = store.open_dataset("2024-01")
        print("attributes:", jan.attributes())
        print("schema:    ", jan.array_meta("temperature"))
        print("stats:     ", jan.array_stats("temperature"))
        print("time:      ", jan.read_array("time"))
        print("a 2x6 box across the chunk boundary:\n", jan.read_array("temperature", [3, 6], [2, 6]))

        # 3. The same slice out of every dataset, stacked into one (N, ...) array.
        stacked = store.read_array_across_stacked("temperature", store.list_datasets(), [0, 0], [2, 3])
        print("stacked shape:", stacked.shape)
        print(stacked)


if __name__ == "__main__":
    main()
