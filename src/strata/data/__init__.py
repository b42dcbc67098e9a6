"""Datasets, immutable content-addressed versions, pipelines with quality gates, and record-level lineage.

- ``records``: ``Record`` and the content hash of a record and of a version.
- ``store``: ``DatasetStore``: datasets, versions (from records, files, folders, the ledger), diff, export.
- ``blobs``: where a version's records live (``data.storage_url``: a local folder or any fsspec URL).
- ``pipeline`` / ``steps`` / ``checks``: declared steps with a step-output cache, quality checks that block.
- ``lineage``: the generic ``lineage_edges`` graph, walked either way (RAG and the gateway write to it too).
"""
