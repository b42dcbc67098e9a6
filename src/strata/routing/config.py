"""Config models of routing: a route, its deployments and their prices, and the per-route features
(breaker, canary, shadow, complexity routing, response cache, context window) a route turns on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from strata.config.base import OffOr, Strict
from strata.engines.config import EngineField
from strata.guard.config import GuardRule
from strata.observe.config import SloSettings
from strata.observe.quality.config import QualityConfig


class Price(Strict):
    """What a deployment costs. Token prices are USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    busy_hour: float = Field(0.0, ge=0, description="USD per busy engine hour, apportioned by slot time")


class DeploymentConfig(Strict):
    """One way to serve a route: an engine, a model artifact, engine params and a price."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    engine: EngineField
    price: Price = Price()
    weight: float = Field(1.0, gt=0, description="Share of traffic among deployments of the same role")
    role: Literal["primary", "canary", "shadow", "fallback"] = Field(
        "primary", description="primary: load-balanced; canary: gets `traffic`% of requests and is judged "
        "against the primaries; shadow: gets a `traffic`% mirror the client never sees; fallback: tried in "
        "order once every primary failed")
    traffic: float | None = Field(None, gt=0, le=100, description="canary: % of requests it serves; "
                                  "shadow: % of requests mirrored to it")
    tier: Literal["cheap", "strong"] | None = Field(None, description="Complexity routing: which requests it takes")
    max_in_flight: int | None = Field(
        None, ge=1, description="Requests this deployment may hold at once; beyond it, traffic is shed")
    canary: dict[str, Any] | None = Field(
        None, description="canary role only: this rollout's own canary settings (steps, analysis limits), over "
        "the route's `canary`; they end with the rollout (strata deploy --step/--analysis set them)")

    @model_validator(mode="after")
    def _traffic_for_role(self) -> DeploymentConfig:
        if self.role in ("canary", "shadow") and self.traffic is None:
            raise ValueError(f"deployment {self.name!r}: a {self.role} needs `traffic` (a percentage)")
        if self.role not in ("canary", "shadow") and self.traffic is not None:
            raise ValueError(f"deployment {self.name!r}: `traffic` is only for canary and shadow deployments")
        if self.canary is not None and self.role != "canary":
            raise ValueError(f"deployment {self.name!r}: `canary` settings are only for a canary deployment")
        unknown = sorted(set(self.canary or {}) - set(CanaryConfig.model_fields))
        if unknown:
            raise ValueError(f"deployment {self.name!r}: unknown canary setting {unknown[0]!r} (one of "
                             f"{', '.join(CanaryConfig.model_fields)})")
        return self


class BreakerConfig(Strict):
    """Passive ejection: a deployment that keeps failing is taken out of rotation for a growing cool-down."""

    consecutive_failures: int = Field(5, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1, description="Eject above this failure share in the window")
    window: float = Field(30.0, gt=0, description="Seconds of outcomes the error rate looks at")
    min_requests: int = Field(10, ge=1, description="Outcomes needed in the window before the rate counts")
    cooldown: float = Field(5.0, gt=0, description="First ejection; doubles on each repeated ejection")
    cooldown_max: float = Field(300.0, gt=0)
    panic: bool = Field(True, description="When every deployment is ejected, keep serving from one (once per "
                        "request) instead of answering 503")
    caller_failures: int = Field(3, ge=0, description="Failures of one key's requests, within the window, while "
                                 "others are served, before that key gets 429s on the route (0: never)")


class CanaryConfig(Strict):
    """How a canary is judged against the primaries and walked through its traffic steps.

    Every analysis compares the canary with the primaries over the sliding ``window``. A metric counts
    as worse only when the difference is both large (beyond its threshold) and significant (one-sided
    test at ``confidence``, with at least ``min_requests`` on each side): ten requests never decide.
    """

    steps: list[float] = Field(default_factory=list, description="Traffic % plan, e.g. [5, 25, 50, 100]; "
                               "empty: hold at the canary's traffic until `strata deploy promote`")
    step_min_seconds: float = Field(300.0, ge=0, description="Minimum time on a step before the next")
    step_min_requests: int = Field(50, ge=0, description="Minimum canary requests on a step before the next")
    auto_promote: bool = Field(True, description="Promote by itself once the last step passes")
    interval: float = Field(5.0, gt=0, description="Seconds between analyses")
    window: float = Field(600.0, gt=0, description="Seconds of outcomes an analysis looks at")
    min_requests: int = Field(30, ge=5, description="Outcomes needed on each side before a metric decides")
    confidence: float = Field(0.99, ge=0.5, lt=1, description="One-sided confidence a difference must reach")
    max_error_rate_increase: float = Field(0.02, ge=0, le=1, description="Canary error rate minus primary's")
    max_latency_ratio: float = Field(1.5, ge=1, description="Canary p95 latency over primary's")
    max_ttft_ratio: float = Field(1.5, ge=1, description="Canary p95 time to first token over primary's")
    max_cost_ratio: float = Field(1.5, ge=1, description="Canary mean cost per request over primary's")
    max_feedback_drop: float = Field(0.1, ge=0, description="Primary mean feedback score minus canary's")
    max_quality_drop: float = Field(0.1, ge=0, le=1, description="Primary mean online quality score (0..1, the "
                                    "route's quality sampling) minus canary's")
    max_answer_drift: float | None = Field(None, ge=0, le=2, description="Answer drift limit: MMD² of the "
                                           "canary's answer embeddings against the primaries' (drift samples of "
                                           "each arm; needs drift sampling on for the route); null: no answer "
                                           "drift check")
    max_answer_length_shift: float = Field(0.3, ge=0, le=1, description="Answer drift: KS distance D of the "
                                           "answer lengths (tokens), canary against primaries")
    max_refusal_rate_increase: float = Field(0.1, ge=0, le=1, description="Answer drift: canary refusal rate "
                                             "minus primaries'")

    @model_validator(mode="after")
    def _steps_increase(self) -> CanaryConfig:
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("canary.steps must be increasing percentages in (0, 100]")
        return self


class ShadowConfig(Strict):
    """Comparing a shadow deployment's answers with the served ones."""

    max_concurrency: int = Field(4, ge=1, description="Mirrored requests in flight at once; more are dropped")
    agreement_route: str | None = Field("minilm", description="Embeddings route scoring answer agreement "
                                        "(cosine similarity); null: exact match only")
    store_chars: int = Field(4000, ge=0, description="Characters of each answer stored for review")


class LabelledExample(Strict):
    text: str = Field(min_length=1)
    hard: bool


class ComplexityConfig(Strict):
    """Complexity routing: score each request 0..1 and send it to the cheap or the strong tier.

    The transparent scorer is a weighted mean of three features, each in 0..1: prompt length, structure
    (code, lists, several questions, reasoning words, math) and the share of "hard" labels among the
    ``k`` nearest labelled examples by embedding (when ``examples`` and ``embeddings_route`` are set).
    """

    scorer: Literal["transparent"] = "transparent"
    threshold: float = Field(0.5, ge=0, le=1, description="Score at or above which the strong tier serves")
    length_weight: float = Field(1.0, ge=0)
    structure_weight: float = Field(1.0, ge=0)
    knn_weight: float = Field(2.0, ge=0)
    long_prompt_chars: int = Field(2000, ge=1, description="Prompt length that scores 1 on the length feature")
    embeddings_route: str | None = Field("minilm", description="Embeddings route for the nearest-neighbour feature")
    k: int = Field(5, ge=1)
    examples: list[LabelledExample] = Field(default_factory=list)
    examples_file: Path | None = Field(None, description="JSONL of {\"text\": ..., \"hard\": true|false}")


class CacheConfig(Strict):
    """Exact response cache for a route (opt-in). A request skips it with ``X-Strata-Cache: bypass``."""

    exact: bool = Field(False, description="Serve identical requests from the cache")
    ttl: float = Field(3600.0, gt=0, description="Seconds an answer stays servable")
    max_entries: int = Field(10_000, ge=1, description="Least recently used answers are dropped beyond this")
    namespace: Literal["team", "key", "none"] = Field("team", description="Never serve one team's (key's) "
                                                      "answer to another; none: shared by everyone")
    only_deterministic: bool = Field(True, description="Only when temperature is 0 or a seed is set")
    semantic: bool = Field(False, description="Also serve questions that mean the same (embedding similarity, "
                           "guarded against negation, number and entity changes)")
    similarity: float = Field(0.85, gt=0, le=1, description="Cosine similarity a semantic hit needs "
                              "(0.85: measured in docs/benchmarks.md)")
    embeddings_route: str = Field("minilm", description="Embeddings route for the semantic cache")


class RetrievalConfig(Strict):
    """Retrieval-augmented answers on a chat route (``rag:``; the ``retrieve`` stage, ``pipeline.retrieve``).

    The last user message is searched, as the caller, in the caller's team's vector stores / collections of
    these ids (nothing crosses teams: another team's id is a 404); the passages the caller may read are
    injected with citation markers and the chunks used go to the ledger row (``rag`` column), the trace and the
    lineage graph.
    """

    vector_stores: list[str] = Field(default_factory=list, description="Vector stores to search: ids (vs_...) or "
                                     "names (the caller's team's newest store of that name)")
    collections: list[str] = Field(default_factory=list, description="RAG collection ids to search")
    k: int = Field(4, ge=1, le=50, description="Passages injected")
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    min_score: float | None = Field(None, description="Drop passages scoring below this")
    inject: Literal["system", "user"] = Field("system", description="A system message before the conversation, "
                                              "or a preamble to the last user message")
    citation_format: str = Field("[{n}]", description="How passage n is marked (and asked to be cited)")
    instructions: str = Field("Answer the question with the help of these passages, and cite the passage you "
                              "used like {marker}.", description="Put before the passages; {marker} is the first "
                              "passage's marker")

    @model_validator(mode="after")
    def _sources(self) -> RetrievalConfig:
        if not self.vector_stores and not self.collections:
            raise ValueError("rag needs vector_stores or collections")
        if "{n}" not in self.citation_format:
            raise ValueError("rag.citation_format must contain {n}")
        return self


class ContextConfig(Strict):
    """Keeping long conversations inside the window (opt-in per route).

    Over the budget, ``truncate`` keeps the system prompt and the newest turns that fit (at most
    ``keep_last``); ``summarize`` does the same and replaces the dropped turns by a summary written by
    ``summarize_route``. The budget is ``max_prompt_tokens`` or, by default, the smallest context window of
    the route's deployments minus the request's output limit. What was dropped is reported in the
    ``x-strata-context`` response header.
    """

    policy: Annotated[Literal["off", "truncate", "summarize"], OffOr] = "off"
    max_prompt_tokens: int | None = Field(None, ge=16, description="Prompt budget; default: the window "
                                          "minus the output limit")
    keep_last: int = Field(8, ge=1, description="Most turns (after the system prompt) kept as they are")
    summarize_route: str | None = Field(None, description="Chat route that writes the summary (summarize)")
    summary_max_tokens: int = Field(200, ge=16)

    @model_validator(mode="after")
    def _summarizer(self) -> ContextConfig:
        if self.policy == "summarize" and not self.summarize_route:
            raise ValueError("context.policy summarize needs context.summarize_route")
        return self


class RouteConfig(Strict):
    """A public model name clients ask for, served by one or more deployments."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:/-]+$")
    deployments: list[DeploymentConfig] = Field(min_length=1)
    balancer: Literal["least-outstanding", "weighted"] = "least-outstanding"
    affinity: bool = Field(False, description="Stick a user (X-Strata-Affinity header or `user`) to a deployment")
    retries: int = Field(2, ge=0, le=10, description="Extra attempts before the first byte, then fallbacks")
    retry_backoff: float = Field(0.05, ge=0, description="Base seconds between attempts (jittered, doubling)")
    deadline: float | None = Field(None, gt=0, description="Total seconds for all attempts before the first byte")
    continue_streams: bool = Field(False, description="A stream whose upstream dies mid-answer goes on on another "
                                   "deployment, from the text streamed so far (said so in the stream)")
    breaker: BreakerConfig = BreakerConfig()
    canary: CanaryConfig = CanaryConfig()
    shadow: ShadowConfig = ShadowConfig()
    cache: CacheConfig = CacheConfig()
    context: ContextConfig = ContextConfig()
    complexity: ComplexityConfig | None = Field(None, description="Make the route a complexity router")
    max_prompt_tokens: int | None = Field(None, ge=1, description="Refuse (400) a prompt estimated above this many "
                                          "tokens (4 characters a token), before any engine is called")
    max_input_chars: int | None = Field(None, ge=1, description="Refuse (400) a request whose messages, prompt or "
                                        "input hold more characters than this")
    guards: list[GuardRule] = Field(default_factory=list, description="Guardrails on this route's requests "
                                    "and answers (PII, secrets, output validation, ...), in order")
    slo: SloSettings | None = Field(None, description="Availability and latency objectives (strata slo status, "
                                    "the burn-rate alerts of deploy/prometheus/strata-rules.yml)")
    quality: QualityConfig | None = Field(None, description="Online quality: score a sample of the route's "
                                          "answers after they are served (off when unset)")
    rag: RetrievalConfig | None = Field(None, description="Retrieve passages (as the caller) and inject them with "
                                        "citations (chat completions)")

    @model_validator(mode="after")
    def _roles(self) -> RouteConfig:
        roles = [d.role for d in self.deployments]
        if "primary" not in roles:
            raise ValueError(f"route {self.name!r} needs at least one deployment with role 'primary'")
        for role in ("canary", "shadow"):
            if roles.count(role) > 1:
                raise ValueError(f"route {self.name!r} may have at most one {role} deployment")
        if self.rag is not None and (self.cache.exact or self.cache.semantic):
            raise ValueError(f"route {self.name!r}: rag and cache cannot both be on (a cached answer would skip "
                             "retrieval's access check for the next caller)")
        tiers = {d.tier for d in self.deployments if d.role == "primary"}
        if self.complexity is not None and not {"cheap", "strong"} <= tiers:
            raise ValueError(f"route {self.name!r}: complexity routing needs primary deployments with "
                             "tier 'cheap' and tier 'strong'")
        try:
            self.canary_settings()
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            where = f"canary.{'.'.join(str(p) for p in err['loc'])}: " if err["loc"] else ""
            raise ValueError(f"route {self.name!r}: canary settings: {where}{msg}") from None
        return self

    def deployment(self, role: str) -> DeploymentConfig | None:
        return next((d for d in self.deployments if d.role == role), None)

    def canary_settings(self) -> CanaryConfig:
        """The canary settings in force: the route's ``canary``, under the canary deployment's own (which
        belong to that rollout only and go with it)."""
        dep = self.deployment("canary")
        if dep is None or not dep.canary:
            return self.canary
        return CanaryConfig.model_validate({**self.canary.model_dump(), **dep.canary})
