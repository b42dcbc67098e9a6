"""Loading settings: defaults, source precedence, and validation that names the bad field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from strata.config.engines import OpenAIEngineConfig
from strata.config.settings import load_settings
from strata.errors import ConfigError
from tests.leaks import secret


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("STRATA_")]:
        monkeypatch.delenv(name)


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "strata.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def route(name: str, dep: str, engine: dict[str, Any] | None = None, **price: float) -> dict[str, Any]:
    engine = engine or {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    return {"name": name, "deployments": [{"name": dep, "engine": engine, "price": price}]}


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(None)
    assert [r.name for r in s.routes] == ["smollm2", "minilm"]
    assert [r.deployments[0].engine.type for r in s.routes] == ["llamacpp", "sentence-transformers"]
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8000)
    assert s.admin_key is None
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / '.strata' / 'strata.db'}"


def test_database_follows_data_dir(tmp_path: Path) -> None:
    s = load_settings(None, data_dir=tmp_path / "data")
    assert s.database_url == f"sqlite:///{(tmp_path / 'data' / 'strata.db').resolve()}"
    pg = "postgresql://u@db/strata"
    assert load_settings(None, data_dir=tmp_path, **{"database.url": pg}).database_url == pg


def test_precedence_defaults_yaml_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, {"server": {"host": "0.0.0.0", "port": 9001}, "log_level": "debug"})
    assert load_settings(path).server.port == 9001

    monkeypatch.setenv("STRATA_SERVER__PORT", "9002")
    s = load_settings(path)
    assert s.server.port == 9002
    assert s.server.host == "0.0.0.0" and s.log_level == "debug"  # env overrides one field, not the section

    s = load_settings(path, **{"server.port": 9003})
    assert s.server.port == 9003
    assert s.server.host == "0.0.0.0" and s.log_level == "debug"

    s = load_settings(path, **{"server.port": None})  # an unset CLI flag changes nothing
    assert s.server.port == 9002


def test_env_alone_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("STRATA_ADMIN_KEY", secret("sk-from-env"))
    monkeypatch.setenv("STRATA_KEYS__SYNC_INTERVAL", "0.5")
    s = load_settings(None)
    assert s.data_dir == tmp_path / "env-data"
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "sk-from-env"
    assert s.keys.sync_interval == 0.5


def test_yaml_routes_replace_the_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"routes": [route("chat", "chat-a", input_per_mtok=1.5)]}))
    assert [r.name for r in s.routes] == ["chat"]
    assert s.routes[0].deployments[0].price.input_per_mtok == 1.5


@pytest.mark.parametrize(("routes", "needle"), [
    ([route("chat", "a"), route("chat", "b")], "'chat'"),
    ([route("chat", "a"), route("other", "a")], "'a'"),
])
def test_duplicate_names_rejected(tmp_path: Path, routes: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, {"routes": routes}))
    assert "duplicate" in exc.value.message and needle in exc.value.message


@pytest.mark.parametrize("url", ["ftp://host/v1", "127.0.0.1:8000/v1", "file:///etc/passwd"])
def test_openai_base_url_must_be_http(tmp_path: Path, url: str) -> None:
    engine = {"type": "openai", "base_url": url, "model": "m"}
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, {"routes": [route("chat", "a", engine)]}))
    assert "base_url" in exc.value.message and "http" in exc.value.message


@pytest.mark.parametrize(("url", "why"), [("http://[::1", "Invalid IPv6 URL"), ("http://:80/v1", "has no host"),
                                          ("http://h:99999/v1", "Port out of range")])
def test_openai_base_url_that_cannot_be_reached_stops_startup(tmp_path: Path, url: str, why: str) -> None:
    engine = {"type": "openai", "base_url": url, "model": "m"}
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, {"routes": [route("chat", "a", engine)]}))
    assert "base_url" in exc.value.message and why in exc.value.message


def test_openai_base_url_trailing_slash_is_dropped(tmp_path: Path) -> None:
    engine = {"type": "openai", "base_url": "https://api.example.com/v1/", "model": "m"}
    s = load_settings(write(tmp_path, {"routes": [route("chat", "a", engine)]}))
    cfg = s.routes[0].deployments[0].engine
    assert isinstance(cfg, OpenAIEngineConfig) and cfg.base_url == "https://api.example.com/v1"


@pytest.mark.parametrize("field", ["input_per_mtok", "output_per_mtok", "busy_hour"])
def test_prices_are_non_negative(tmp_path: Path, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, {"routes": [route("chat", "a", **{field: -0.01})]}))
    assert field in exc.value.message
    assert load_settings(write(tmp_path, {"routes": [route("chat", "a", **{field: 0.0})]}))


@pytest.mark.parametrize(("config", "field"), [
    ({"server": {"port": 70000}}, "server.port"),
    ({"bogus": 1}, "bogus"),
    ({"ledger": {"flush_interval": 0}}, "ledger.flush_interval"),
    ({"routes": []}, "routes"),
    ({"routes": [{"name": "bad name!", "deployments": route("x", "y")["deployments"]}]}, "routes.0.name"),
])
def test_invalid_values_name_the_field(tmp_path: Path, config: dict[str, Any], field: str) -> None:
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert field in exc.value.message and str(path) in exc.value.message


@pytest.mark.parametrize(("engine", "field", "words"), [
    ({"type": "llamacpp", "n_ctx": 5}, "engine.n_ctx", "greater than or equal to 256"),
    ({"type": "llamacpp", "n_ctxx": 4096}, "engine.n_ctxx", "Extra inputs"),
    ({"type": "openai", "base_url": "http://127.0.0.1:9/v1"}, "engine.model", "Field required"),
    ({"type": "sentence-transformers", "batch_size": 0}, "engine.batch_size", "greater than or equal to 1"),
    ({"type": "vllm", "model": "m"}, "engine.type", "unknown engine type 'vllm' (known: llamacpp, openai, "
     "sentence-transformers"),
    ({"model": "m"}, "engine.type", "Field required (one of: llamacpp, openai, sentence-transformers"),
    ("openai", "engine", "a mapping with a `type`"),
])
def test_engine_errors_name_the_engine_field(tmp_path: Path, engine: Any, field: str, words: str) -> None:
    """The engine section is checked against its own type's model: the message names that type's field."""
    path = write(tmp_path, {"routes": [route("chat", "a", engine)]})
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert f"routes.0.deployments.0.{field}: " in exc.value.message and words in exc.value.message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "nope.yaml")
    assert "nope.yaml" in exc.value.message


@pytest.mark.parametrize("text", ["- server\n- routes\n", "just words\n", "[1, 2]\n"])
def test_yaml_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "strata.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(path) in exc.value.message and "mapping" in exc.value.message


@pytest.mark.parametrize("content", [b"routes: [unclosed\n", b"log_level: \xff\xfe\n"])
def test_unreadable_yaml_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "strata.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert exc.value.message.startswith(f"invalid YAML in {path}")


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "strata.yaml"
    path.write_text("# nothing yet\n")
    assert [r.name for r in load_settings(path).routes] == ["smollm2", "minilm"]
