"""The README documents every config field, CLI command and metric (datasette's test_docs idea)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.main import get_command

from strata.cli.main import app
from strata.config.engines import LlamaCppEngineConfig, OpenAIEngineConfig, SentenceTransformersEngineConfig
from strata.config.settings import Price, Settings
from strata.observe.metrics import Metrics

README = (Path(__file__).parent.parent / "README.md").read_text()


def _fields(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= _fields(ann)
    return names


CONFIG_FIELDS = sorted(
    _fields(Settings) | _fields(Price) | _fields(LlamaCppEngineConfig) | _fields(OpenAIEngineConfig)
    | _fields(SentenceTransformersEngineConfig)
)


@pytest.mark.parametrize("field", CONFIG_FIELDS)
def test_config_field_documented(field: str) -> None:
    assert re.search(rf"\b{field}:", README), f"config field {field!r} missing from README's configuration"


def _commands() -> list[str]:
    root = get_command(app)
    out = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        out += [f"{name} {s}" for s in subs] if subs else [name]
    return sorted(out)


@pytest.mark.parametrize("command", _commands())
def test_cli_command_documented(command: str) -> None:
    assert f"strata {command}" in README, f"CLI command 'strata {command}' missing from README"


def _metric_names() -> list[str]:
    names = []
    for metric in Metrics().registry.collect():
        suffix = "_total" if metric.type == "counter" else ""
        names.append(metric.name + suffix)
    return sorted(names)


@pytest.mark.parametrize("metric", _metric_names())
def test_metric_documented(metric: str) -> None:
    assert metric in README, f"metric {metric!r} missing from README's metrics table"
