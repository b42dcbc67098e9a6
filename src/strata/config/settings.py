"""The typed configuration tree.

Source order (later wins): defaults < ``strata.yaml`` < ``STRATA_*`` environment < CLI flags.
Nested fields use ``__`` in the environment: ``STRATA_SERVER__PORT=9000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from strata.config.engines import EngineField, LlamaCppEngineConfig, SentenceTransformersEngineConfig
from strata.errors import ConfigError
from strata.observe.tracing import TracingSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false: for a setting whose choices include "off", that is what it meant."""
    return "off" if value is False else value


OffOr = BeforeValidator(_off)  # Annotated[Literal["off", ...], OffOr]


class Price(_Strict):
    """What a deployment costs. Token prices are USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    busy_hour: float = Field(0.0, ge=0, description="USD per busy engine hour, apportioned by slot time")


class DeploymentConfig(_Strict):
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


class BreakerConfig(_Strict):
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


class CanaryConfig(_Strict):
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

    @model_validator(mode="after")
    def _steps_increase(self) -> CanaryConfig:
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("canary.steps must be increasing percentages in (0, 100]")
        return self


class ShadowConfig(_Strict):
    """Comparing a shadow deployment's answers with the served ones."""

    max_concurrency: int = Field(4, ge=1, description="Mirrored requests in flight at once; more are dropped")
    agreement_route: str | None = Field("minilm", description="Embeddings route scoring answer agreement "
                                        "(cosine similarity); null: exact match only")
    store_chars: int = Field(4000, ge=0, description="Characters of each answer stored for review")


class LabelledExample(_Strict):
    text: str = Field(min_length=1)
    hard: bool


class ComplexityConfig(_Strict):
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


class CacheConfig(_Strict):
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


class ContextConfig(_Strict):
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


class RouteConfig(_Strict):
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

    @model_validator(mode="after")
    def _roles(self) -> RouteConfig:
        roles = [d.role for d in self.deployments]
        if "primary" not in roles:
            raise ValueError(f"route {self.name!r} needs at least one deployment with role 'primary'")
        for role in ("canary", "shadow"):
            if roles.count(role) > 1:
                raise ValueError(f"route {self.name!r} may have at most one {role} deployment")
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


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    engine_wait_timeout: float = Field(30.0, ge=0, description="How long a request waits for a starting engine")
    graceful_timeout: float = Field(30.0, ge=0, description="Seconds to finish in-flight requests on stop")
    access_log: bool = False


class DatabaseSettings(_Strict):
    url: str | None = Field(None, description="SQLAlchemy URL; default sqlite under data_dir")


class JournalSettings(_Strict):
    """Each ledger row is appended to a local file before its response ends, replayed after a crash."""

    enabled: bool = True
    fsync_interval: float = Field(1.0, gt=0, description="Seconds between fsyncs of the journal (a process "
                                  "crash needs none; a machine crash can take this window)")
    segment_bytes: int = Field(4 * 1024 * 1024, ge=4096, description="Start a new journal file at this size; "
                               "files whose rows are all in the database are deleted")
    adopt_interval: float = Field(30.0, gt=0, description="Seconds between looks for journals of dead processes "
                                  "that shared the data dir (a start always replays them)")


class LedgerSettings(_Strict):
    flush_interval: float = Field(0.25, gt=0, description="Seconds between batched ledger writes")
    batch_size: int = Field(1000, ge=1)
    journal: JournalSettings = JournalSettings()


class SupervisorSettings(_Strict):
    health_interval: float = Field(1.0, gt=0)
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(30.0, gt=0)


class KeySettings(_Strict):
    sync_interval: float = Field(1.0, gt=0, description="Seconds between key-table syncs (revocations by CLI)")


class StateSettings(_Strict):
    """Where counters shared by gateway replicas live: rate limits, budgets."""

    backend: Literal["memory", "redis"] = Field("memory", description="memory: this process only; redis: "
                                                "shared by every replica")
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("strata", min_length=1)
    on_unavailable: Literal["fail-open", "fail-closed"] = Field(
        "fail-open", description="Redis unreachable: fail-open keeps serving with this replica's local counters; "
        "fail-closed answers 503")
    retry_interval: float = Field(1.0, gt=0, description="Seconds before trying an unreachable Redis again")
    timeout: float = Field(0.25, gt=0, description="Seconds a Redis call may take before it counts as down")
    reservation_ttl: float = Field(900.0, gt=0, description="Seconds a budget reservation may be held; one whose "
                                   "request never settles (a gateway killed mid-request) is released after this")


class LimitRule(_Strict):
    """A rate limit. Every matching rule applies (the strictest decides); ``subject: "*"`` gives each key,
    team or route its own counter."""

    scope: Literal["key", "team", "route", "deployment"]
    subject: str = Field("*", min_length=1, description="Key id, team, route or deployment name; * for each one")
    rpm: int | None = Field(None, ge=1, description="Requests per minute")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute (prompt at admission, completion after)")

    @model_validator(mode="after")
    def _some_limit(self) -> LimitRule:
        if self.rpm is None and self.tpm is None:
            raise ValueError("a limit needs rpm, tpm or both")
        return self


class BudgetRule(_Strict):
    """A spend cap. Requests reserve their maximum cost at admission; past the cap they get 429."""

    scope: Literal["key", "team", "tag"]
    subject: str = Field(min_length=1, description="Key id, team, or NAME=VALUE for a tag; * for each key/team")
    period: Literal["day", "month", "total"] = "month"
    cap_usd: float = Field(gt=0)
    alerts: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0],
                                description="Shares of the cap that emit a budget_alert event, once per period")

    @model_validator(mode="after")
    def _tag_subject(self) -> BudgetRule:
        if self.scope == "tag" and ("=" not in self.subject or self.subject.startswith("=")):
            raise ValueError("a tag budget's subject is NAME=VALUE, e.g. feature=search")
        if any(not 0 < a <= 1 for a in self.alerts):
            raise ValueError("alerts are shares of the cap in (0, 1]")
        return self


class CostAlertSettings(_Strict):
    """Week-over-week cost alerts: a ``cost_anomaly`` event when a group's spend moves more than this."""

    enabled: bool = False
    by: str = Field("team", description="team, key, route, deployment, model, user, endpoint or tag:NAME")
    threshold_pct: float = Field(50.0, gt=0, description="Change in % of last week's spend that alerts")
    min_usd: float = Field(1.0, ge=0, description="Ignore groups spending less than this a week")
    interval: float = Field(3600.0, gt=0, description="Seconds between checks")


def default_routes() -> list[RouteConfig]:
    """The embedded default: the bundled chat model and the bundled embedding model."""
    return [
        RouteConfig(
            name="smollm2",
            deployments=[
                DeploymentConfig(
                    name="smollm2-local",
                    engine=LlamaCppEngineConfig(type="llamacpp"),
                    price=Price(busy_hour=0.10),
                )
            ],
        ),
        RouteConfig(
            name="minilm",
            deployments=[
                DeploymentConfig(
                    name="minilm-local",
                    engine=SentenceTransformersEngineConfig(type="sentence-transformers"),
                    price=Price(busy_hour=0.02),
                )
            ],
        ),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STRATA_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    data_dir: Path = Path(".strata")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admin_key: SecretStr | None = Field(None, description="Preset admin key (STRATA_ADMIN_KEY)")
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    ledger: LedgerSettings = LedgerSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    keys: KeySettings = KeySettings()
    state: StateSettings = StateSettings()
    limits: list[LimitRule] = Field(default_factory=list, description="Rate limits (more at run time: strata limits)")
    budgets: list[BudgetRule] = Field(default_factory=list, description="Spend caps (more at run time: strata budgets)")
    cost_alerts: CostAlertSettings = CostAlertSettings()
    tracing: TracingSettings = TracingSettings()
    routes: list[RouteConfig] = Field(default_factory=default_routes, min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        _require_unique("routes", [r.name for r in self.routes])
        _require_unique("deployments", [d.name for r in self.routes for d in r.deployments])
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'strata.db').resolve()}"


def _require_unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"duplicate name {n!r} in {what}")
        seen.add(n)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from all sources; any problem becomes one ``ConfigError`` line."""
    if config_file is not None:
        _require_mapping(config_file)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    try:
        nested = _nest({k: v for k, v in overrides.items() if v is not None})
        return _FromFile(**nested)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_file)) from None
    except ValueError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def _require_mapping(config_file: Path) -> None:
    """The file must exist and hold ``field: value`` pairs at the top (a list or a scalar is a typo)."""
    if not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    try:
        with config_file.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid YAML in {config_file}: {' '.join(str(exc).split())}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"invalid config in {config_file}: the top level must be a mapping of settings "
                          f"(field: value), not a {type(data).__name__}")


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"server.port": 1}`` -> ``{"server": {"port": 1}}`` for CLI overrides."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _describe(exc: ValidationError, config_file: Path | None) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after")) or "config"
    where = f" in {config_file}" if config_file else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid config{where}: {field}: {err['msg']}{more}"
