"""Index backends behind one protocol (``index.base.IndexBackend``): ``embedded`` (usearch + tantivy files under
the data dir, no server) and ``chroma`` (a Chroma server over HTTP for dense, tantivy files for BM25)."""
