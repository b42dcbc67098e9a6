"""The settings root: it composes the config models each package owns, and loads them once.

Source order (later wins): defaults < ``strata.yaml`` < ``STRATA_*`` environment < CLI flags.
Nested fields use ``__`` in the environment: ``STRATA_SERVER__PORT=9000``.

Every model is re-exported here, so ``from strata.config.settings import RouteConfig`` keeps working;
code inside Strata imports a model from its package (``strata.routing.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from strata.config.base import OffOr, Strict
from strata.data.config import DataSettings
from strata.engines.config import LlamaCppEngineConfig, SentenceTransformersEngineConfig, SupervisorSettings
from strata.errors import ConfigError
from strata.evals.config import EvalSettings
from strata.files.config import FilesSettings
from strata.gateway.config import ServerSettings
from strata.governance.config import (
    AbuseSettings,
    BudgetRule,
    CostAlertSettings,
    KeySettings,
    LimitRule,
    SecretsSettings,
)
from strata.guard.config import GuardRule, GuardSettings
from strata.observe.config import AlertSettings, AuditSettings, JournalSettings, LedgerSettings
from strata.observe.drift.config import DriftSettings
from strata.observe.metrics_export import MetricsSettings
from strata.observe.quality.config import QualitySettings
from strata.observe.tracing import TracingSettings
from strata.rag.config import RagSettings
from strata.registry.config import RegistrySettings
from strata.routing.config import (
    BreakerConfig,
    CacheConfig,
    CanaryConfig,
    ComplexityConfig,
    ContextConfig,
    DeploymentConfig,
    LabelledExample,
    Price,
    RouteConfig,
    ShadowConfig,
)
from strata.state.config import StateSettings
from strata.store.config import DatabaseSettings

_Strict = Strict  # the name this module gave it before the models moved to their packages

__all__ = [
    "AbuseSettings",
    "BreakerConfig",
    "BudgetRule",
    "CacheConfig",
    "CanaryConfig",
    "ComplexityConfig",
    "ContextConfig",
    "CostAlertSettings",
    "DatabaseSettings",
    "DeploymentConfig",
    "DriftSettings",
    "GuardRule",
    "GuardSettings",
    "JournalSettings",
    "KeySettings",
    "LabelledExample",
    "LedgerSettings",
    "LimitRule",
    "OffOr",
    "Price",
    "RouteConfig",
    "SecretsSettings",
    "ServerSettings",
    "Settings",
    "ShadowConfig",
    "StateSettings",
    "Strict",
    "SupervisorSettings",
    "TracingSettings",
    "default_routes",
    "load_settings",
]


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
    metrics: MetricsSettings = MetricsSettings()
    audit: AuditSettings = AuditSettings()
    guards: GuardSettings = GuardSettings()
    secrets: SecretsSettings = SecretsSettings()
    abuse: AbuseSettings = AbuseSettings()
    alerts: AlertSettings = AlertSettings()
    drift: DriftSettings = DriftSettings()
    quality: QualitySettings = QualitySettings()
    files: FilesSettings = FilesSettings()
    rag: RagSettings = RagSettings()
    data: DataSettings = DataSettings()
    registry: RegistrySettings = RegistrySettings()
    evals: EvalSettings = EvalSettings()
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
