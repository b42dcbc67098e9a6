"""Config model of the HTTP server the gateway runs in."""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    engine_wait_timeout: float = Field(30.0, ge=0, description="How long a request waits for a starting engine")
    graceful_timeout: float = Field(30.0, ge=0, description="Seconds to finish in-flight requests on stop")
    access_log: bool = False
