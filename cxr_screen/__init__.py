"""The composition root: the `cxr-screen` command and the wiring of the layers below it.

The only package that imports all the others. `db` (the schema and queries) imports
nothing of ours; `worker` (intake, screening, DICOM networking, the decoder and the
inference pipeline) never imports `trainer`; `trainer` uses the worker's decoder and
pipeline, its settings and `db`. The import contracts in `pyproject.toml` check this.
"""
