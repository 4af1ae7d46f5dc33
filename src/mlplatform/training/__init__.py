"""Training jobs: datasets in, registered versions out, run on Dask."""
