"""Config models of engines: the worker supervisor, and one per engine type.

A deployment's ``engine:`` names its ``type``; the engine registry (``strata.engines.registry``: built-ins
and ``strata.engines`` plugins) gives the model the rest is validated against, so a third-party engine
brings its own settings, and its errors name its fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from strata.config.base import Strict
from strata.engines import registry


class SupervisorSettings(Strict):
    """How supervised engine worker processes are health-checked and restarted."""

    health_interval: float = Field(1.0, gt=0)
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(30.0, gt=0)


class EngineConfig(Strict):
    """The base of engine config models (a plugin's may derive from it): ``type`` names the engine."""

    type: str


class LlamaCppEngineConfig(EngineConfig):
    """A local GGUF model served by llama.cpp (xllamacpp) in a supervised worker process."""

    type: Literal["llamacpp"]
    model: str = Field("bundled:smollm2", description="GGUF path, or bundled:NAME for a model shipped in a package")
    n_parallel: int = Field(8, ge=1, le=256, description="Decode slots batched together (continuous batching)")
    n_ctx: int = Field(8192, ge=256, description="Total KV-cache tokens, shared by the slots")
    kv_unified: bool = Field(True, description="One KV cache for all slots: each request may use all n_ctx "
                             "tokens (false: a fixed n_ctx / n_parallel per slot)")
    chat_template: str | None = Field(None, description="Jinja chat template: a file path or a built-in "
                                      "name (chatml-tools); default: the model's own (bundled:smollm2: "
                                      "chatml-tools, for tool calling)")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores")
    n_batch: int = Field(512, ge=32)
    startup_timeout: float = Field(60.0, gt=0)

    @property
    def slot_context(self) -> int:
        """The most tokens (prompt and answer) one request can use."""
        return self.n_ctx if self.kv_unified else self.n_ctx // self.n_parallel


class UpstreamCapabilities(Strict):
    """What an OpenAI-compatible upstream can do; requests needing anything set false get a 400."""

    tools: bool = True
    vision: bool = True
    audio: bool = True
    json_schema: bool = True
    logprobs: bool = True
    native_n: bool = Field(True, description="The upstream answers n > 1 itself; false: one call per choice")
    max_n: int = Field(128, ge=1)
    dimensions: bool = Field(True, description="Embeddings honour a requested size (Matryoshka models)")
    embedding_size: int | None = Field(None, ge=1, description="Native embedding size, if known")


class OpenAIEngineConfig(EngineConfig):
    """Any OpenAI-compatible HTTP upstream: vLLM, llama-server, Ollama, a hosted API."""

    type: Literal["openai"]
    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8001/v1")
    model: str = Field(description="Model name the upstream expects")
    api_key: SecretStr | None = Field(None, description="Upstream key: the key, env:NAME or file:/path (resolved "
                                      "at startup); given at run time, it is stored encrypted")
    api_key_env: str | None = Field(None, description="Environment variable holding the upstream key")
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0, description="Max seconds between bytes from the upstream")
    max_connections: int = Field(256, ge=1)
    context_length: int | None = Field(None, ge=1, description="Context window, to reject max_tokens early")
    capabilities: UpstreamCapabilities = Field(default_factory=UpstreamCapabilities)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018  (raises on a port that is not a number in range)
        except ValueError as exc:
            raise ValueError(f"is not a valid URL: {exc}") from None
        if not parts.hostname:
            raise ValueError("has no host")
        return v.rstrip("/")


class SentenceTransformersEngineConfig(EngineConfig):
    """Local sentence embeddings (CPU by default) in a supervised worker process."""

    type: Literal["sentence-transformers"]
    model: str = Field("bundled:all-minilm-l6-v2", description="Model directory, or bundled:NAME")
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    matryoshka: bool = Field(False, description="Trained so that truncated embeddings stay meaningful: "
                             "`dimensions` is honoured by truncating and renormalising")
    startup_timeout: float = Field(120.0, gt=0)


def _engine(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate an ``engine:`` mapping against the config model of the engine type it names."""
    if isinstance(value, BaseModel):  # built in Python (the default routes), already validated
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("engine_mapping", "an engine is a mapping with a `type` (one of: {known})",
                                  {"known": ", ".join(registry.known())})
    if "type" not in value:
        raise _at_type("missing", "Field required (one of: {known})", {"known": ", ".join(registry.known())}, value)
    try:
        model = registry.config_model(str(value["type"]))
    except registry.UnknownEngine as exc:
        raise _at_type("unknown_engine", "{message}", {"message": str(exc)}, value["type"]) from None
    return model.model_validate(value)


def _at_type(kind: str, message: str, ctx: dict[str, Any], value: Any) -> ValidationError:
    error = InitErrorDetails(type=PydanticCustomError(kind, message, ctx), loc=("type",), input=value)
    return ValidationError.from_exception_data("engine", [error])


ENGINE_SCHEMA = {"type": "object", "required": ["type"], "additionalProperties": True,
                 "properties": {"type": {"type": "string", "description": "Engine type: llamacpp, openai, "
                                         "sentence-transformers, or a strata.engines plugin's"}}}

# DeploymentConfig.engine: any registered engine's config (dumped with all of its own fields)
EngineField = Annotated[SerializeAsAny[EngineConfig], WrapValidator(_engine), WithJsonSchema(ENGINE_SCHEMA)]
