"""RAG core: parse, chunk, index (dense + lexical behind one protocol), hybrid search, ACL at retrieval.

``service.RagService`` is the entry point; the HTTP surface (vector stores, ``rag:`` routes) lives elsewhere.
"""
