"""Request schemas for the OpenAI-compatible endpoints.

They validate what Strata relies on and name the offending field on error; unknown fields are kept
and passed through to the engine untouched, as OpenAI clients send many engine-specific options.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from strata.errors import InvalidRequest


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool = False


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class _Sampling(_Open):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256)


class Function(_Open):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"]
    function: Function


class NamedFunction(_Open):
    name: str = Field(min_length=1)


class ToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatRequest:
        choice = self.tool_choice
        if choice is None or choice == "none":
            return self
        if not self.tools:
            raise InvalidRequest("tool_choice is only allowed when tools are given.", param="tool_choice")
        if isinstance(choice, ToolChoice) and choice.function.name not in {t.function.name for t in self.tools}:
            raise InvalidRequest(f"tool_choice names the function '{choice.function.name}', which is not in tools.",
                                 param="tool_choice")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]

    @model_validator(mode="after")
    def _some_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise InvalidRequest("prompt is an empty list: give a string, strings or token ids.", param="prompt")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)


def validate(schema: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = _param(err["loc"])
        code = "missing_required_parameter" if err["type"] == "missing" else "invalid_value"
        raise InvalidRequest(f"Invalid value for '{param}': {err['msg']}", param=param, code=code) from None


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[dict[str,any]]", "list[str]", "list[int]") or str(part).startswith("literal[") \
                or str(part)[:1].isupper():  # a union member's name, e.g. ToolChoice
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


# Top-level fields of OpenAI's answers, by ``object``; engines add their own (llama.cpp: ``timings``)
_CHAT = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"})
RESPONSE_FIELDS: dict[str, frozenset[str]] = {
    "chat.completion": _CHAT,
    "chat.completion.chunk": _CHAT,
    "text_completion": frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}),
    "list": frozenset({"object", "data", "model", "usage"}),
}
OBJECTS = {"chat": "chat.completion", "completion": "text_completion", "embeddings": "list"}


def openai_shaped(obj: dict[str, Any], kind: str, chunk: bool = False) -> float | None:
    """Keep only OpenAI's top-level fields of an answer (or stream chunk), in place; text completions get a
    ``cmpl-`` id. Returns the engine's own processing time in ms when it reported one (llama.cpp's
    ``timings``), for the ledger and the ``x-strata-engine-ms`` header."""
    timings = obj.get("timings")
    kind_object = OBJECTS.get(kind, "")
    allowed = RESPONSE_FIELDS.get(obj.get("object") or (kind_object + (".chunk" if chunk and kind == "chat" else "")))
    if allowed is not None:
        for key in [k for k in obj if k not in allowed]:
            del obj[key]
    rid = obj.get("id")
    if kind == "completion" and isinstance(rid, str) and not rid.startswith("cmpl-"):
        obj["id"] = "cmpl-" + rid.removeprefix("chatcmpl-")
    if isinstance(timings, dict):
        ms = float(timings.get("prompt_ms") or 0) + float(timings.get("predicted_ms") or 0)
        return round(ms, 2) if ms else None
    return None
