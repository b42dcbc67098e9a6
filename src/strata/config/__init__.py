"""Typed configuration: one pydantic-settings tree, loaded once at startup."""

from strata.config.settings import DeploymentConfig, RouteConfig, Settings, load_settings

__all__ = ["DeploymentConfig", "RouteConfig", "Settings", "load_settings"]
