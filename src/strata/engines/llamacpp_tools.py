"""Tool calling on llama.cpp, made to keep OpenAI's promises even with a tiny model.

``tool_choice: auto`` goes to llama.cpp as is: its chat template describes the tools, and its parser turns
a ``<tool_call>`` the model writes into OpenAI ``tool_calls`` (streamed as deltas). The model decides.

``tool_choice: required`` and a named tool must return a call. llama.cpp's own grammar for ``required``
still lets the model write prose first, and a small model (the bundled SmolLM2-135M) then never gets to a
call (measured: 128 tokens of prose, ``finish_reason: length``). So the adapter asks for the call as
grammar-constrained JSON instead, ``{"name": <one of the allowed tools>, "arguments": <its parameters
schema>}`` (``response_format: json_schema``; the tools stay in the prompt), and turns that JSON into an
OpenAI tool call, ``finish_reason: tool_calls``. Streamed, the call arrives as a name delta, an
arguments delta and the finish chunk once the JSON is complete.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from strata.errors import InvalidRequest


def call_id() -> str:
    return "call_" + os.urandom(12).hex()


def forced_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tools one of which must be called, or None when the model may answer in prose."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return [t for t in tools if (t.get("function") or {}).get("name") == name]
    return list(tools)


def constrained(body: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The request that makes llama.cpp answer with exactly one call of one of ``tools``."""
    if body.get("response_format") not in (None, {"type": "text"}):
        raise InvalidRequest("response_format cannot be combined with a required tool call on this model.",
                             param="response_format")
    options = []
    for tool in tools:
        fn = tool["function"]
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                        "required": ["name", "arguments"]})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**body, "tool_choice": "none", "parallel_tool_calls": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}}


def _parse_call(text: str) -> dict[str, Any] | None:
    """The call in a constrained answer; None when it was cut off (``max_tokens``): then the answer is
    returned as it is, with its ``finish_reason: length``, as OpenAI does."""
    try:
        obj = orjson.loads(text)
        return {"id": call_id(), "type": "function",
                "function": {"name": str(obj["name"]), "arguments": orjson.dumps(obj["arguments"]).decode()}}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def as_tool_call(result: dict[str, Any]) -> dict[str, Any]:
    """A constrained answer (the call as JSON content) as an OpenAI tool call."""
    for choice in result.get("choices") or []:
        message = choice.get("message") or {}
        call = _parse_call(str(message.get("content") or ""))
        if call is not None:
            choice["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice["finish_reason"] = "tool_calls"
    return result


def with_ids(result: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's parsed tool calls, each with an id (clients answer a call by its id)."""
    for choice in result.get("choices") or []:
        calls = (choice.get("message") or {}).get("tool_calls")
        for call in calls or []:
            if not call.get("id"):
                call["id"] = call_id()
        if calls and choice.get("finish_reason") == "stop":
            choice["finish_reason"] = "tool_calls"
    return result


async def stream_tool_call(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """A constrained stream (the call as JSON content deltas) as OpenAI tool-call chunks."""
    text: list[str] = []
    async for chunk in chunks:
        choices = chunk.get("choices") or []
        if not choices:
            yield chunk  # the usage chunk
            continue
        choice = choices[0]
        text.append(str((choice.get("delta") or {}).get("content") or ""))
        if not choice.get("finish_reason"):
            continue
        call = _parse_call("".join(text))
        base = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        index = choice.get("index", 0)
        if call is None:  # cut off: the partial JSON as content, with its finish_reason
            yield {**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": "".join(text)},
                                        "finish_reason": choice["finish_reason"]}]}
            continue
        opening = {"index": 0, "id": call["id"], "type": "function",
                   "function": {"name": call["function"]["name"], "arguments": ""}}
        for delta, finish in (({"role": "assistant", "content": None, "tool_calls": [opening]}, None),
                              ({"tool_calls": [{"index": 0, "function":
                                                {"arguments": call["function"]["arguments"]}}]}, None),
                              ({}, "tool_calls")):
            yield {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


async def stream_with_ids(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """llama.cpp's streamed tool calls, each call's first delta with an id."""
    seen: set[int] = set()
    async for chunk in chunks:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or []:
                index = int(call.get("index", 0))
                if index not in seen:
                    seen.add(index)
                    if not call.get("id"):
                        call["id"] = call_id()
                        call.setdefault("type", "function")
            if seen and choice.get("finish_reason") == "stop":
                choice["finish_reason"] = "tool_calls"
        yield chunk
