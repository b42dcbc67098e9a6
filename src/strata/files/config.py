"""Config of the Files store (``files:``)."""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class FilesSettings(Strict):
    max_bytes: int = Field(100 * 1024 * 1024, ge=1, description="The largest file /v1/files accepts, in bytes")
    storage_url: str | None = Field(None, description="Where file content is stored: a directory or any fsspec "
                                    "URL (s3://bucket/prefix); default <data_dir>/files")
