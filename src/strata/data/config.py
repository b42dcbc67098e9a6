"""``data:`` settings: where dataset records are stored and which route embeds for pipelines."""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class DataSettings(Strict):
    storage_url: str | None = Field(None, description="Where version records are stored: any fsspec URL "
                                    "(file:///srv/data, s3://bucket/prefix, memory://x); default "
                                    "<data_dir>/datasets")
    embeddings_route: str = Field("minilm", description="The route the pipelines' embed step and the "
                                  "embedding-shift check call through the gateway")
    max_records_per_request: int = Field(100_000, ge=1, description="Most records one admin API create or "
                                         "records page may carry")
