"""xarray and dask integration: the only place atlas imports them at module level."""
