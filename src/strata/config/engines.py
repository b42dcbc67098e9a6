"""Per-engine configuration models; the ``type`` field picks one (a discriminated union)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LlamaCppEngineConfig(_Strict):
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


class UpstreamCapabilities(_Strict):
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


class OpenAIEngineConfig(_Strict):
    """Any OpenAI-compatible HTTP upstream: vLLM, llama-server, Ollama, a hosted API."""

    type: Literal["openai"]
    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8001/v1")
    model: str = Field(description="Model name the upstream expects")
    api_key: SecretStr | None = None
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
        return v.rstrip("/")


class SentenceTransformersEngineConfig(_Strict):
    """Local sentence embeddings (CPU by default) in a supervised worker process."""

    type: Literal["sentence-transformers"]
    model: str = Field("bundled:all-minilm-l6-v2", description="Model directory, or bundled:NAME")
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    matryoshka: bool = Field(False, description="Trained so that truncated embeddings stay meaningful: "
                             "`dimensions` is honoured by truncating and renormalising")
    startup_timeout: float = Field(120.0, gt=0)


EngineConfig = Annotated[
    LlamaCppEngineConfig | OpenAIEngineConfig | SentenceTransformersEngineConfig,
    Field(discriminator="type"),
]
