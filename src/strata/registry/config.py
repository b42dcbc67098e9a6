"""Config of the model registry."""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class RegistrySettings(Strict):
    """The model registry (``strata models``): versions, aliases, approvals."""

    register_bundled: bool = Field(True, description="Register the bundled models (smollm2, minilm) as version 1 "
                                   "with alias champion on the first start (idempotent)")
    require_approval: bool = Field(False, description="An alias may only point at an approved version")
