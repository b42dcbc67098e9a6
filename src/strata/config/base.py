"""What every config model shares: unknown fields are an error, and YAML's bare ``off`` means "off".

Imports nothing of Strata's, so a package's ``config.py`` can build on it without importing the settings
root (which imports every package's config) or any runtime module.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Strict(BaseModel):
    """A config model: a misspelt field stops startup instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


def _off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false: for a setting whose choices include "off", that is what it meant."""
    return "off" if value is False else value


OffOr = BeforeValidator(_off)  # Annotated[Literal["off", ...], OffOr]
