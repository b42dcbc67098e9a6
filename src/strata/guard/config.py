"""Config models of guardrails: a rule (which detector, where, what to do) and the per-team rules.

A route lists its rules under ``guards``; ``guards.rules`` (top level) apply to every route and
``guards.teams.NAME`` to every request of that team's keys. A rule's ``options`` are validated by its
detector's own model (``GuardSpec.options``) when the config loads, so a typo stops startup.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from strata.config.base import Strict

OUTPUT_ONLY = {"json_schema", "refusal"}
NO_REDACT = {"json_schema", "refusal", "injection"}
# What each ``where`` reads: a request's tool outputs (role ``tool`` messages, Responses ``function_call_output``
# items) are part of its input, so an ``input`` rule keeps covering them; ``tool`` narrows a rule to them.
PLACES: dict[str, frozenset[str]] = {"input": frozenset({"input", "tool"}), "tool": frozenset({"tool"}),
                                     "output": frozenset({"output"}), "both": frozenset({"input", "tool", "output"})}


class GuardRule(Strict):
    """One guard: a detector, where it looks, and what happens when it finds something."""

    detector: str = Field(min_length=1, description="pii, secrets, json_schema, refusal, max_length, injection, "
                          "or a plugin from the strata.guards entry-point group")
    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9._:-]+$",
                             description="Names the guard in errors, metrics and the ledger (default: detector)")
    where: Literal["input", "tool", "output", "both"] = Field(
        "input", description="input: the request's text (tool outputs in it too); tool: only the tool outputs "
        "(indirect injection); output: the answer's; both: input and output")
    action: Literal["block", "flag", "redact"] = Field("flag", description="block: 400 guard_blocked (no engine "
                                                       "call on input); flag: record only; redact: replace the text")
    options: dict[str, Any] = Field(default_factory=dict, description="The detector's own settings")
    _built: Any = PrivateAttr(None)
    _opts: Any = PrivateAttr(None)

    @property
    def label(self) -> str:
        return self.name or self.detector

    def looks_at(self, where: str) -> bool:
        """Whether the rule reads texts from ``where`` (``input``, ``tool`` or ``output``)."""
        return where in PLACES[self.where]

    @model_validator(mode="after")
    def _check(self) -> GuardRule:
        from strata.guard.registry import UnknownGuard, spec

        d = self.detector
        if d in OUTPUT_ONLY and self.where != "output":
            raise ValueError(f"guard {self.label!r}: detector {d!r} checks answers: where must be 'output'")
        if d in NO_REDACT and self.action == "redact":
            raise ValueError(f"guard {self.label!r}: detector {d!r} cannot redact (block or flag)")
        try:
            s = spec(d)
        except UnknownGuard as exc:
            raise ValueError(f"guard {self.label!r}: detector: {exc}") from None
        if s.options is None:
            if self.options:
                raise ValueError(f"guard {self.label!r}: detector {d!r} takes no options")
            return self
        try:
            model: type[BaseModel] = s.options
            self._opts = model.model_validate(self.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"guard {self.label!r}: options.{where}: {err['msg']}") from None
        return self

    def detector_instance(self) -> Any:
        """The rule's detector, built on first use and kept with the rule (a route change builds anew)."""
        if self._built is None:
            from strata.guard.registry import spec

            self._built = spec(self.detector).build(self._opts)
        return self._built


class GuardSettings(Strict):
    """Guards beyond a route's own: for every route, and per team (a key's team)."""

    rules: list[GuardRule] = Field(default_factory=list, description="Rules for every route")
    embeddings_route: str = Field("minilm", description="Embeddings route a detector may use (internal calls)")
    teams: dict[str, list[GuardRule]] = Field(default_factory=dict, description="Rules for one team's keys, "
                                              "on every route, after the route's own")
