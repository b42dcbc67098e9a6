"""Output validation: JSON (when the request's ``response_format`` asks for it), refusals and empty
answers, and length. Whole-text verdicts (``start == end == 0``), except ``max_length``, whose finding
covers the text past the limit (so ``redact`` truncates)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import Field

from strata.config.base import Strict
from strata.guard.base import Finding, GuardContext, GuardSpec


class JsonSchemaOptions(Strict):
    retry: bool = Field(True, description="Call the engine once more when the answer is invalid, then fail")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="Validate every answer against this "
                                           "JSON schema, whatever the request's response_format")


def json_problem(text: str, response_format: Any, schema: dict[str, Any] | None) -> str | None:
    """Why ``text`` is not the JSON asked for, or None (also when no JSON was asked for)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if schema is None and kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    if schema is None and kind != "json_object":
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})" if hasattr(exc, "msg") else "not JSON"
    if kind == "json_object" and not isinstance(value, dict):
        return "not a JSON object"
    if schema:
        import jsonschema  # only when a schema is checked

        cls = jsonschema.validators.validator_for(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return f"schema: {path}: {error.message[:200]}"
    return None


class JsonSchemaDetector:
    name = "json_schema"

    def __init__(self, opts: JsonSchemaOptions) -> None:
        self.opts = opts

    async def scan(self, texts: Sequence[str], ctx: GuardContext) -> list[list[Finding]]:
        fmt = ctx.extra.get("response_format")
        out: list[list[Finding]] = []
        for text in texts:
            problem = json_problem(text, fmt, self.opts.schema_)
            out.append([] if problem is None else [Finding("json_schema", replacement=problem)])
        return out


REFUSALS = (r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:'|no)t|cannot|won't|am unable|'m unable)",
            r"^\s*I (?:can(?:'|no)t|cannot|won't) (?:help|assist|comply|provide|do that)",
            r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist|comply|provide)",
            r"\bas an AI(?: language model)?,? I (?:can(?:'|no)t|cannot|don't|do not)")


class RefusalOptions(Strict):
    empty: bool = Field(True, description="An empty (or whitespace) answer counts")
    phrases: list[str] = Field(default_factory=list, description="More refusal patterns (regular expressions)")


class RefusalDetector:
    """A refusal in the first 300 characters of an answer (built-in English patterns and ``phrases``)."""

    name = "refusal"

    def __init__(self, opts: RefusalOptions) -> None:
        self.empty = opts.empty
        self.pattern = re.compile("|".join([*REFUSALS, *opts.phrases]), re.IGNORECASE)

    async def scan(self, texts: Sequence[str], ctx: GuardContext) -> list[list[Finding]]:
        out: list[list[Finding]] = []
        for text in texts:
            if not text.strip():
                out.append([Finding("refusal.empty")] if self.empty else [])
            else:
                out.append([Finding("refusal")] if self.pattern.search(text[:300]) else [])
        return out


class MaxLengthOptions(Strict):
    chars: int = Field(ge=1, description="Most characters a text may have")


class MaxLengthDetector:
    name = "max_length"

    def __init__(self, opts: MaxLengthOptions) -> None:
        self.chars = opts.chars

    async def scan(self, texts: Sequence[str], ctx: GuardContext) -> list[list[Finding]]:
        return [[Finding("max_length", 1.0, self.chars, len(t), "")] if len(t) > self.chars else [] for t in texts]


def _json(opts: object) -> JsonSchemaDetector:
    assert isinstance(opts, JsonSchemaOptions)
    return JsonSchemaDetector(opts)


def _refusal(opts: object) -> RefusalDetector:
    assert isinstance(opts, RefusalOptions)
    return RefusalDetector(opts)


def _max_length(opts: object) -> MaxLengthDetector:
    assert isinstance(opts, MaxLengthOptions)
    return MaxLengthDetector(opts)


JSON_SCHEMA = GuardSpec(JsonSchemaOptions, _json)
REFUSAL = GuardSpec(RefusalOptions, _refusal)
MAX_LENGTH = GuardSpec(MaxLengthOptions, _max_length)
