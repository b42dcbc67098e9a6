"""``rag:`` settings: default index backend, chunking defaults, the embeddings route, the server backend."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from strata.config.base import Strict


class ChunkingConfig(Strict):
    """Structure-aware chunking: sections (headings) first, then paragraphs, sentences, words."""

    max_tokens: int = Field(256, ge=16, le=8192, description="Token budget of one chunk (word-piece estimate)")
    overlap_tokens: int = Field(32, ge=0, description="Tokens of the previous chunk repeated at the start of "
                                "the next one within a section")
    include_heading: bool = Field(True, description="Prefix each chunk's embedded and indexed text with its "
                                  "section heading")


class ChromaSettings(Strict):
    """The server backend: a Chroma server reached over HTTP (``pip install 'strata[chroma]'``)."""

    url: str = Field("http://127.0.0.1:8000", description="Chroma server URL")
    tenant: str = Field("default_tenant", description="Chroma tenant")
    database: str = Field("default_database", description="Chroma database")


class EmbeddedIndexSettings(Strict):
    """The embedded backend's HNSW graph (usearch) under ``<data_dir>/rag/<collection>/``."""

    dtype: Literal["f32", "f16", "i8"] = Field("f32", description="Stored vector precision (f16 halves memory)")
    connectivity: int = Field(16, ge=4, le=128, description="HNSW links per node (M)")
    expansion_add: int = Field(128, ge=8, description="HNSW candidate list while inserting (ef_construction)")
    expansion_search: int = Field(64, ge=8, description="HNSW candidate list while searching (ef), at least k")


class SearchSettings(Strict):
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant k: score = sum w / (k + rank)")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in hybrid fusion")
    lexical_weight: float = Field(1.0, ge=0, description="Weight of the BM25 ranking in hybrid fusion")
    candidates: int = Field(50, ge=1, description="Candidates each ranking contributes to hybrid fusion")
    exact_below: float = Field(0.05, ge=0, le=1, description="Below this fraction of readable chunks a dense "
                               "search is exact over the readable subset; above it, ANN with a filter")


class RagSettings(Strict):
    backend: Literal["embedded", "chroma"] = Field("embedded", description="Index backend of new collections: "
                                                   "embedded (usearch + tantivy files, no server) or chroma")
    embeddings_route: str = Field("minilm", description="Embeddings route the RAG service embeds chunks and "
                                  "queries with")
    embed_batch: int = Field(64, ge=1, description="Chunks per embeddings call while ingesting")
    chunking: ChunkingConfig = ChunkingConfig()
    search: SearchSettings = SearchSettings()
    embedded: EmbeddedIndexSettings = EmbeddedIndexSettings()
    chroma: ChromaSettings = ChromaSettings()
