"""Text-completion logprobs on llama.cpp, in OpenAI's legacy shape.

llama.cpp answers ``/v1/completions`` with ``logprobs: N`` in the chat shape (``{"content": [{"token",
"logprob", "top_logprobs": [...]}]}``, measured on xllamacpp), while OpenAI's text completions carry
``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``. The adapter rewrites
it, JSON and stream alike (a chunk's choice carries its own tokens; offsets continue across chunks):

- ``text_offset`` counts characters from the start of the prompt, as OpenAI's does with ``echo`` off
  (the first generated token sits at ``len(prompt)``).
- ``top_logprobs`` holds the N most likely tokens plus the sampled one when it is not among them
  (OpenAI: "up to logprobs+1 elements").
- ``logprobs: 0`` is sent as 1 (llama.cpp returns no logprobs at all for 0) and trimmed back, so the
  answer still has each token's own logprob, as OpenAI's does.
- In a stream, a token held back because it begins a ``stop`` string arrives with empty text; it is
  dropped, as in llama.cpp's JSON answer, so the tokens always spell the text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


def requested(body: dict[str, Any]) -> int | None:
    """The number of alternatives a text completion asks for, or None when it asks for no logprobs."""
    n = body.get("logprobs")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "logprobs": 1} if requested(body) == 0 else body


def prompts(body: dict[str, Any]) -> list[str | list[int]]:
    """The prompts of a request, one per choice index (a string or a list of token ids each)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt) if isinstance(prompt, list) else []


def _is_withheld(entry: dict[str, Any]) -> bool:
    return entry.get("token") == "" and not entry.get("bytes")


def legacy(logprobs: Any, n: int, offset: int) -> tuple[Any, int]:
    """One choice's llama.cpp logprobs in the legacy shape, its first token at ``offset``; and the offset
    after its last token."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return logprobs, offset
    out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for entry in logprobs["content"]:
        if not isinstance(entry, dict) or _is_withheld(entry):
            continue
        token, logprob = str(entry.get("token", "")), entry.get("logprob")
        top: dict[str, Any] = {}
        for alt in (entry.get("top_logprobs") or [])[:n]:
            # llama.cpp may spell a multi-byte sampled token as U+FFFD among the alternatives
            key = token if alt.get("id") is not None and alt.get("id") == entry.get("id") else str(alt.get("token"))
            top.setdefault(key, alt.get("logprob"))
        top.setdefault(token, logprob)
        out["tokens"].append(token)
        out["token_logprobs"].append(logprob)
        out["top_logprobs"].append(top)
        out["text_offset"].append(offset)
        offset += len(token)
    return out, offset


def rewrite(result: dict[str, Any], n: int, starts: list[int]) -> dict[str, Any]:
    """A JSON answer's choices in the legacy shape; ``starts[i]`` is prompt ``i``'s length."""
    for choice in result.get("choices") or []:
        index = int(choice.get("index") or 0)
        choice["logprobs"], _ = legacy(choice.get("logprobs"), n, starts[index] if index < len(starts) else 0)
    return result


async def rewrite_stream(chunks: AsyncIterator[dict[str, Any]], n: int,
                         prompt_lengths: Callable[[], Awaitable[list[int]]]) -> AsyncIterator[dict[str, Any]]:
    """Each chunk's choices in the legacy shape, offsets continuing from the choice's previous chunk."""
    offsets: dict[int, int] = {}
    try:
        starts = await prompt_lengths()
        async for chunk in chunks:
            for choice in chunk.get("choices") or []:
                index = int(choice.get("index") or 0)
                start = offsets.get(index, starts[index] if index < len(starts) else 0)
                choice["logprobs"], offsets[index] = legacy(choice.get("logprobs"), n, start)
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
