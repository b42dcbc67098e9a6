"""The detector protocol: what every guard (built-in or plugin) implements.

A detector scans a batch of texts (the user's input, retrieved passages, tool outputs, or the model's answer)
and returns, for each text, what it found. What happens then (block, flag, redact) is the rule's action, decided
by the guard stage, not by the detector.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Action = Literal["block", "flag", "redact"]
Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a detector found in one text. ``start``/``end``: the characters it covers (both 0: the whole
    text, e.g. an injection verdict); ``replacement``: what ``redact`` puts in its place (e.g. ``[EMAIL]``)."""

    detector: str  # e.g. "pii.email", "secret.api_key", "injection"
    score: float = 1.0  # the detector's confidence, 0..1
    start: int = 0
    end: int = 0
    replacement: str | None = None


@dataclass(slots=True)
class GuardContext:
    """What a detector may use besides the text: embeddings through a Strata route (an internal call with its
    own ledger row), and where the text comes from."""

    embed: Embed | None = None
    source: Literal["input", "retrieved", "tool", "output"] = "input"
    extra: dict[str, object] = field(default_factory=dict)


class Detector(Protocol):
    name: str

    async def scan(self, texts: Sequence[str], ctx: GuardContext) -> list[list[Finding]]:
        """One list of findings per text, in order (an empty list: nothing found)."""
        ...


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """A detector type: the pydantic model of its ``options`` (None: it takes none) and how to build one.

    A built-in module, or a plugin registered in the ``strata.guards`` entry-point group, exposes one::

        [project.entry-points."strata.guards"]
        toxicity = "strata_toxicity:SPEC"

    ``build`` is called once per rule (the detector may load a model then) with the validated options.
    """

    options: type | None
    build: Callable[[object], Detector]
