"""One error tree for all of Strata.

Every error a client can see derives from :class:`StrataError`, knows its HTTP status and its
OpenAI error ``type``, and renders as OpenAI's error object::

    StrataError (500, api_error)
    ├── InternalError (500, server_error)  any other exception, as the client sees it
    ├── ConfigError                  bad configuration; stops startup (CLI prints one line)
    ├── InvalidRequest (400)         malformed or invalid input; ``param`` names the field
    ├── AuthenticationFailed (401)   missing, unknown, revoked or expired key
    ├── PermissionDenied (403)       key may not use this route / endpoint
    ├── NotFound (404)               unknown model (route) or resource
    ├── PayloadTooLarge (413)        body over ``server.max_body_bytes``
    ├── RateLimited (429)            (used by governance; carries ``retry_after``)
    └── UpstreamError (502)          an engine or upstream failed
        ├── UpstreamUnavailable (503)    engine down, restarting, or not ready
        └── UpstreamTimeout (504)        engine did not answer in time

Third-party exceptions are translated at the boundary (see ``engines.http``) so that the
gateway only ever handles this tree.
"""

from __future__ import annotations

from typing import Any

import orjson


class StrataError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    upstream_status: int | None = None  # the HTTP status an upstream answered, when it caused this error

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InternalError(StrataError):
    """An exception that is not a ``StrataError`` (a bug, or an answer Strata's own code cannot handle)."""

    type = "server_error"
    code = "internal_error"


class ConfigError(StrataError):
    type = "config_error"


class InvalidRequest(StrataError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(StrataError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(StrataError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(StrataError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(StrataError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(StrataError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(StrataError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "engine_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
