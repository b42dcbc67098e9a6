"""Config model of the database."""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class DatabaseSettings(Strict):
    url: str | None = Field(None, description="SQLAlchemy URL; default sqlite under data_dir")
