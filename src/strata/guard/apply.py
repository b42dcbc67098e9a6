"""Applying rules to a request's text and to an answer: which rules hold for a request, the texts they
look at (written back in place when redacted), and what each action does.

A text is a *slot*: a container and a key (a message's ``content``, a content part's ``text``, a
completion prompt, a choice's message). Redacting writes the slot, so the redacted text is the one every
later stage sees: the cache key, the engine, the shadow mirror, the stored Responses conversation.
A request's tool outputs are slots of their own (``tool_slots``), scanned with ``source="tool"`` and recorded
with ``where`` ``tool``. Findings go to the ledger (``CallRecord.guard``: guard, where, detector kinds and
counts, never the text), the
``strata_guard_findings_total`` metric and the guard stage's span.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strata.errors import InvalidRequest, UpstreamError
from strata.guard.base import Finding, GuardContext
from strata.guard.config import GuardRule

if TYPE_CHECKING:
    from strata.guard.config import GuardSettings
    from strata.observe.metrics import Metrics
    from strata.routing.config import RouteConfig

Slot = tuple[Any, Any]  # (container, key): container[key] is a text


class GuardBlocked(InvalidRequest):
    code = "guard_blocked"


class GuardInvalidOutput(UpstreamError):
    """The answer failed an output check (e.g. JSON asked for, not given) after the allowed retry."""

    code = "guard_invalid_output"


def rules_for(settings: GuardSettings, route: RouteConfig, team: str | None) -> list[GuardRule]:
    """The route's rules, then every route's, then the team's."""
    return [*route.guards, *settings.rules, *(settings.teams.get(team, ()) if team else ())]


TOOL_ROLES = {"tool", "function"}


def input_slots(body: dict[str, Any]) -> list[Slot]:
    """The texts a user sent: chat message contents (string or text parts) of every role but a tool's,
    prompts, embeddings input."""
    slots = _message_slots(m for m in body.get("messages") or () if m.get("role") not in TOOL_ROLES)
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            slots.append((body, key))
        elif isinstance(value, list):
            slots.extend((value, i) for i, v in enumerate(value) if isinstance(v, str))
    return slots


def tool_slots(body: dict[str, Any]) -> list[Slot]:
    """The tool outputs a request carries: role ``tool`` (and legacy ``function``) messages, which is also what
    a Responses ``function_call_output`` item becomes. Text the model did not write and the user may not have
    read: where indirect injection arrives."""
    return _message_slots(m for m in body.get("messages") or () if m.get("role") in TOOL_ROLES)


def _message_slots(messages: Iterable[dict[str, Any]]) -> list[Slot]:
    slots: list[Slot] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            slots.append((m, "content"))
        elif isinstance(content, list):
            slots.extend((p, "text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return slots


def output_slots(result: dict[str, Any]) -> list[Slot]:
    """The answer's texts: each choice's message content, or its text."""
    slots: list[Slot] = []
    for choice in result.get("choices") or ():
        message = choice.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                slots.append((message, "content"))
            elif message.get("content") is None and not message.get("tool_calls"):
                slots.append(({"content": ""}, "content"))  # an empty answer: seen by refusal, never written
        elif isinstance(choice.get("text"), str):
            slots.append((choice, "text"))
    return slots


def redact(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with each finding's span replaced (a whole-text finding replaces all of it)."""
    out, last = [], len(text)
    for f in sorted(findings, key=lambda f: f.start, reverse=True):
        start, end = (f.start, f.end) if f.end > f.start else (0, len(text))
        if end > last:
            continue  # overlaps one already replaced
        out.append(text[end:last])
        out.append(f.replacement if f.replacement is not None else "[REDACTED]")
        last = start
    out.append(text[:last])
    return "".join(reversed(out))


BLOCKED = {"input": "The request", "tool": "A tool output in the request", "output": "The answer"}


@dataclass(slots=True)
class Hit:
    rule: GuardRule
    where: str
    findings: list[Finding]
    action: str  # the rule's, or "flag" where the text could not be changed any more (a streamed answer)


@dataclass(slots=True)
class Guarding:
    """The rules of one request and what they found."""

    rules: list[GuardRule]
    metrics: Metrics
    hits: list[Hit] = field(default_factory=list)

    def any(self, where: str) -> bool:
        return any(r.looks_at(where) for r in self.rules)

    async def check(self, where: str, slots: list[Slot], ctx: GuardContext, *, final: bool = True,
                    flag_only: bool = False) -> list[Hit]:
        """Run the ``where`` rules over ``slots``, in order (a rule sees the text earlier ones redacted).

        ``block`` raises ``GuardBlocked`` (``json_schema``'s returns its hit instead: the caller may retry);
        with ``final`` false, its hit is returned but not recorded (a retry will be checked again); with
        ``flag_only`` every rule only records."""
        found: list[Hit] = []
        for rule in self.rules:
            if not rule.looks_at(where) or not slots:
                continue
            texts = [c[k] for c, k in slots]
            per_text = await rule.detector_instance().scan(texts, ctx)
            findings = [f for fs in per_text for f in fs]
            if not findings:
                continue
            hit = Hit(rule, where, findings, "flag" if flag_only else rule.action)
            found.append(hit)
            if rule.detector == "json_schema" and hit.action == "block":
                if final:
                    self.record(hit)
                continue
            self.record(hit)
            if hit.action == "block":
                kinds = ", ".join(sorted({f.detector for f in findings}))
                what = BLOCKED[where]
                raise GuardBlocked(f"{what} was blocked by guard '{rule.label}' ({kinds}).",
                                   param=None if where == "output" else "messages")
            if hit.action == "redact":
                for (c, k), fs in zip(slots, per_text, strict=True):
                    if fs:
                        c[k] = redact(c[k], fs)
        return found

    def record(self, hit: Hit) -> None:
        self.hits.append(hit)
        self.metrics.guard_findings.labels(hit.rule.label, hit.action, hit.where).inc(len(hit.findings))

    def ledger(self) -> list[dict[str, Any]] | None:
        """What the ledger row keeps: per hit the guard, where, action and how many of each kind (no text)."""
        if not self.hits:
            return None
        return [{"guard": h.rule.label, "where": h.where, "action": h.action,
                 "found": dict(Counter(f.detector for f in h.findings))} for h in self.hits]

    def span_value(self) -> str:
        return ",".join(f"{h.rule.label}:{h.where}:{h.action}:{len(h.findings)}" for h in self.hits)
