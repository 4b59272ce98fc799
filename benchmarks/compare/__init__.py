"""atlas against its peers: one harness (drivers.py, drivers_zarr.py), one table of
workloads (workloads.py), one entry point::

    python -m benchmarks.compare --workload small,gridded --systems atlas,h5py,netCDF4,zarr,tensorstore,icechunk

Every (system, operation, repeat) runs in a fresh process; the reported time is the median
over the processes of each process's median. Results go to benchmarks/results/ as markdown
and JSON. A system whose package is missing is listed as "not installed"; the reference
implementation runs with ``$ATLAS_REFERENCE_PYTHON`` (a Python with atlas-python 0.9.1).
"""
