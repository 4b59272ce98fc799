"""Object storage: the whole store API on an obstore handle instead of a path.

By default the store lives in obstore's ``LocalStore`` on a temporary directory, so this runs
anywhere without credentials:

    python examples/08_object_store.py

To run the same code against S3 (or MinIO, Ceph, R2, moto ...), name a bucket; credentials come
from the usual AWS environment variables / config files (obstore reads them, atlas never sees
them). The example writes under a fresh prefix and removes what it wrote at the end:

    ATLAS_EXAMPLE_S3_BUCKET=my-bucket \\
    ATLAS_EXAMPLE_S3_PREFIX=atlas-examples \\
    AWS_REGION=eu-west-1 \\
    python examples/08_object_store.py

    # an S3-compatible server on plain http, e.g. MinIO or `moto_server -p 5000`:
    ATLAS_EXAMPLE_S3_BUCKET=my-bucket ATLAS_EXAMPLE_S3_ENDPOINT=http://127.0.0.1:5000 \\
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... python examples/08_object_store.py

Needs the cloud extra: ``pip install "atlas-python[cloud]"``.
"""

import os
import tempfile
import uuid

import numpy as np
import obstore
import xarray as xr
from obstore.store import LocalStore, S3Store

import atlas


def open_backend(tmp: str):
    """The obstore handle to use, and a description. LocalStore unless an S3 bucket is configured."""
    bucket = os.environ.get("ATLAS_EXAMPLE_S3_BUCKET")
    if not bucket:
        return LocalStore(os.path.join(tmp, "atlas_store"), mkdir=True), "LocalStore (temporary directory)"

    # ---- S3 block: switched on by ATLAS_EXAMPLE_S3_BUCKET ------------------------------------
    prefix = f"{os.environ.get('ATLAS_EXAMPLE_S3_PREFIX', 'atlas-examples').strip('/')}/run-{uuid.uuid4().hex[:8]}"
    options = {}
    endpoint = os.environ.get("ATLAS_EXAMPLE_S3_ENDPOINT")
    if endpoint:  # S3-compatible servers: path-style requests; plain http only when asked for
        options["endpoint"] = endpoint
        options["client_options"] = {"allow_http": endpoint.startswith("http://")}
    store = S3Store(bucket, prefix=prefix, region=os.environ.get("AWS_REGION", "us-east-1"), **options)
    # Other backends work the same way, e.g.
    #   obstore.store.GCSStore("my-bucket", prefix="stores/jan")
    #   obstore.store.AzureStore(container_name="my-container", prefix="stores/jan")
    #   obstore.store.HTTPStore.from_url("https://example.com/atlas-store")   (read-only)
    return store, f"S3 s3://{bucket}/{prefix}"


def month(m: int) -> xr.Dataset:
    rng = np.random.default_rng(m)
    return xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), (15 + rng.standard_normal((8, 18, 36))).astype(np.float32),
                            {"units": "degC"}),
            "station": (("station",), np.array(["De Bilt", "Zürich", "Tromsø"], dtype=object)),
        },
        coords={
            "time": np.datetime64(f"2024-{m:02d}-01", "ns") + np.arange(8) * np.timedelta64(3, "h"),
            "lat": np.linspace(-85, 85, 18),
            "lon": np.linspace(0, 350, 36),
        },
        attrs={"month": m, "source": "synthetic"},
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store, where = open_backend(tmp)
        print("backend:", where)
        try:
            run(store)
        finally:
            if os.environ.get("ATLAS_EXAMPLE_S3_BUCKET"):  # remove what this run wrote (its own prefix)
                for batch in obstore.list(store):
                    obstore.delete(store, [m["path"] for m in batch])


def run(store) -> None:
    # 1. Create: the handle goes where a path would. Nothing is written until flush()/close().
    with atlas.Atlas.create(store, codec="zstd") as st:
        for m in (1, 2, 3):
            ds = st.create_dataset(f"grid-{m:02d}")
            ds.define_array("temperature", dtype="float32", dims=["lat", "lon"], shape=[90, 180],
                            chunk_shape=[45, 90], fill_value=float("nan"))
            field = (np.sin(np.linspace(0, np.pi, 90))[:, None] * 30 + m).astype(np.float32) * np.ones((1, 180), np.float32)
            ds.write_array("temperature", [0, 0], field[:, :170].copy())  # the last 10 columns stay NaN
            ds.define_array("station", dtype="string", dims=["s"], shape=[2])
            ds.write_array("station", [0], np.array(["KNMI", "MeteoSwiss"], dtype=object))
            ds.set_attribute("month", m)
        # xarray datasets, stored with their coordinates and attributes (chunked on disk)
        for m in (1, 2):
            st.add_xr_dataset(month(m), f"xr-{m:02d}", chunks={"temperature": [4, 9, 18]})
    # leaving the block flushed: one object per array name, then the metadata (committed last)

    # 2. Reopen through the same handle (a fresh obstore handle on the same location works too).
    st = atlas.Atlas.open(store)
    print(st)
    print("datasets:", st.list_datasets())

    jan = st.open_dataset("grid-01")
    print("attributes:", jan.attributes())
    print("stats:     ", jan.array_stats("temperature"))
    print("a box:     ", jan.read_array("temperature", [40, 165], [2, 8]))

    # 3. Bulk reads: one stacked (N, ...) array; the byte ranges are fetched with coalesced
    #    get_ranges calls (a handful of requests, not one per dataset).
    grids = [n for n in st.list_datasets() if n.startswith("grid-")]
    stacked = st.read_array_across_stacked("temperature", grids, [0, 0], [45, 90])
    print("stacked:   ", stacked.shape, stacked.dtype)

    # 4. xarray: eager, and lazy (dask, one task per on-disk chunk; computed with threads).
    back = st.to_xarray("xr-01", chunks=None)
    xr.testing.assert_identical(back, month(1))
    lazy = st.to_xarray("xr-02")
    print("lazy temperature:", type(lazy["temperature"].data).__name__, lazy["temperature"].data.chunks)
    xr.testing.assert_identical(lazy.compute(), month(2))
    both = st.to_xarray_many(["xr-01", "xr-02"])
    print("to_xarray_many:", dict(both.sizes))

    # 5. Delete + compact reclaims the space; reads are unchanged.
    st.delete_dataset("grid-03")
    st.compact()
    np.testing.assert_array_equal(atlas.Atlas.open(store).open_dataset("grid-01").read_array("temperature"),
                                  jan.read_array("temperature"))
    objects = [m for batch in obstore.list(store, prefix="arrays") for m in batch]
    print(f"after compact: {len(objects)} objects, {sum(m['size'] for m in objects)} bytes under arrays/")
    print("ok")


if __name__ == "__main__":
    main()
