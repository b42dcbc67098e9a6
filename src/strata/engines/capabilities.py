"""What a deployment can do, and refusing a request that needs more, before any engine is called.

Each engine reports its ``Capabilities``: a local llama.cpp derives them from the model it loaded (its
chat template's tool support, vision only with a projector), sentence-transformers from its model
(native embedding size), an OpenAI-compatible upstream from its engine config (permissive by default:
a remote API is assumed to do what OpenAI does). A route can do what *every* deployment that may serve
it can do, so no attempt, retry or fallback lands on an engine that cannot handle the request.

A request that needs a missing capability gets a 400 ``invalid_request_error`` naming the field
(``tools``, ``messages[0].content[1].image_url``, ``dimensions``…), never a silently ignored option and
never an engine error that would count against the deployment's health.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from strata.errors import InvalidRequest

ENDPOINTS = frozenset({"chat", "completion", "embeddings"})
ENDPOINT_NAMES = {"chat": "chat completions", "completion": "completions", "embeddings": "embeddings"}
MEDIA = {"image_url": "vision", "input_audio": "audio", "file": "files"}


@dataclass(frozen=True, slots=True)
class Capabilities:
    endpoints: frozenset[str] = ENDPOINTS
    tools: bool = True  # tools / tool_choice / tool messages
    functions: bool = True  # the deprecated functions / function_call (llama.cpp ignores them: refused)
    vision: bool = True  # image_url content parts
    audio: bool = True  # input_audio content parts
    audio_output: bool = True  # modalities ["audio"] / audio: spoken answers
    files: bool = True  # file content parts
    json_schema: bool = True  # response_format json_object / json_schema
    logprobs: bool = True
    max_n: int = 128  # choices per request
    native_n: bool = True  # the engine answers n > 1 itself (else the adapter fans out n calls)
    embedding_size: int | None = None  # native embedding dimensions, when known
    dimensions: bool = True  # honours a smaller `dimensions` (Matryoshka); False: only the native size
    echo: bool = True  # text completions: the prompt returned before the answer
    suffix: bool = True  # text completions: insertion before a given suffix
    best_of: bool = True  # text completions: the best n of best_of samples

    def summary(self) -> dict[str, Any]:
        return {"endpoints": sorted(self.endpoints), "tools": self.tools, "vision": self.vision,
                "audio": self.audio, "audio_output": self.audio_output, "json_schema": self.json_schema,
                "logprobs": self.logprobs, "max_n": self.max_n, "embedding_size": self.embedding_size,
                "dimensions": self.dimensions}


PERMISSIVE = Capabilities()


def capabilities_of(engine: Any) -> Capabilities:
    """An engine's capabilities; a third-party engine that declares none is taken as permissive."""
    caps = getattr(engine, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else PERMISSIVE


FLAGS = ("tools", "functions", "vision", "audio", "audio_output", "files", "json_schema", "logprobs", "native_n",
         "echo", "suffix", "best_of")


def combine(all_caps: Iterable[Capabilities]) -> Capabilities:
    """What every one of several deployments can do (the route's capabilities)."""
    caps = list(all_caps)
    if len(caps) <= 1:  # the common route: one deployment (on every request, so no new object)
        return caps[0] if caps else PERMISSIVE
    sizes = {c.embedding_size for c in caps if c.embedding_size is not None}
    flags = {name: all(getattr(c, name) for c in caps) for name in FLAGS}
    one_size = next(iter(sizes)) if len(sizes) == 1 else None
    return Capabilities(endpoints=frozenset.intersection(*(c.endpoints for c in caps)),
                        max_n=min(c.max_n for c in caps), embedding_size=one_size,
                        dimensions=all(c.dimensions for c in caps) and len(sizes) <= 1, **flags)


def unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def require(caps: Capabilities, model: str, endpoint: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field of ``body`` that ``caps`` cannot honour."""
    if endpoint not in caps.endpoints:
        raise InvalidRequest(f"The model '{model}' does not support {ENDPOINT_NAMES[endpoint]}.",
                             param="model", code="unsupported_endpoint")
    if endpoint == "embeddings":
        _embeddings(caps, model, body)
        return
    if endpoint == "chat":
        _messages(caps, model, body.get("messages"))
        _tools(caps, model, body)
        _audio_output(caps, model, body)
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema") and not caps.json_schema:
            raise unsupported(f"The model '{model}' does not support response_format {fmt['type']}.",
                              "response_format")
    if endpoint == "completion":
        _completion(caps, model, body)
    if (body.get("logprobs") or body.get("top_logprobs")) and not caps.logprobs:
        raise unsupported(f"The model '{model}' does not return logprobs.", "logprobs")
    n = body.get("n")
    if isinstance(n, int) and n > caps.max_n:
        raise unsupported(f"The model '{model}' answers at most {caps.max_n} choices per request (n={n}).", "n")


def _messages(caps: Capabilities, model: str, messages: Any) -> None:
    for i, message in enumerate(messages or []):
        if not isinstance(message, dict):
            continue
        if not caps.tools and (message.get("role") == "tool" or message.get("tool_calls")):
            field_ = "tool_calls" if message.get("tool_calls") else "role"
            raise unsupported(f"The model '{model}' does not support tool calls.", f"messages[{i}].{field_}")
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            need = MEDIA.get(str(kind))
            if need is not None and not getattr(caps, need):
                raise InvalidRequest(f"The model '{model}' does not accept {kind} content (no {need} support).",
                                     param=f"messages[{i}].content[{j}].{kind}", code="unsupported_content")


def _tools(caps: Capabilities, model: str, body: dict[str, Any]) -> None:
    for name in ("functions", "function_call"):
        if body.get(name) and not caps.functions:
            raise unsupported(f"The model '{model}' does not support the deprecated {name}; use tools and "
                              "tool_choice.", name)
    if caps.tools:
        return
    if body.get("tools"):
        raise unsupported(f"The model '{model}' does not support tool calling.", "tools")
    choice = body.get("tool_choice")
    if choice is not None and choice != "none":
        raise unsupported(f"The model '{model}' does not support tool calling.", "tool_choice")


def _audio_output(caps: Capabilities, model: str, body: dict[str, Any]) -> None:
    if caps.audio_output:
        return
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        raise unsupported(f"The model '{model}' does not answer with audio; ask for modalities [\"text\"].",
                          "modalities")
    if body.get("audio") is not None:
        raise unsupported(f"The model '{model}' does not answer with audio; omit audio.", "audio")


def _completion(caps: Capabilities, model: str, body: dict[str, Any]) -> None:
    """The legacy completion options an engine may not know (llama.cpp answers as if they were not set)."""
    if body.get("echo") and not caps.echo:
        raise unsupported(f"The model '{model}' does not support echo (returning the prompt).", "echo")
    if body.get("suffix") and not caps.suffix:
        raise unsupported(f"The model '{model}' does not support suffix (insertion).", "suffix")
    best_of, n = body.get("best_of"), body.get("n") or 1
    if isinstance(best_of, int) and best_of > 1 and best_of != n and not caps.best_of:
        raise unsupported(f"The model '{model}' does not support best_of; use n to get several answers.",
                          "best_of")


def _embeddings(caps: Capabilities, model: str, body: dict[str, Any]) -> None:
    dims = body.get("dimensions")
    if dims is None:
        return
    size = caps.embedding_size
    if size is not None and dims == size:
        return
    if not caps.dimensions:
        native = f" (its native size is {size})" if size is not None else ""
        raise unsupported(f"The model '{model}' does not support choosing the embedding size{native}; "
                          "omit dimensions.", "dimensions")
    if size is not None and dims > size:
        raise unsupported(f"dimensions must be at most {size} for the model '{model}'.", "dimensions")
