"""Every block in README.md and docs/*.md works when pasted.

- YAML: each block that is a Strata config, or a fragment of one (a few top-level settings, a route's
  sections, a route without its deployments), loads through ``load_settings`` like ``strata up -c`` does.
- Shell: each ``strata …`` command in a bash block (and each ``$ strata …`` line in an output block) names a
  real command whose options and arguments parse, and its ``--help`` works; each ``make`` target exists.
- curl lines and Python blocks run against a real Strata (on the fault-injecting upstream, routes named as
  in the docs); ``traffic.py`` finishes on its own with a bounded number of requests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from strata.cli.main import app
from strata.config.engines import LlamaCppEngineConfig, OpenAIEngineConfig, SentenceTransformersEngineConfig
from strata.config.settings import DeploymentConfig, RouteConfig, Settings, load_settings
from tests.servers import ADMIN_KEY, StrataProcess, openai_route
from tests.upstreams import FaultyUpstream

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DOCUMENTED_URL = "http://127.0.0.1:8000"
ENGINE = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}  # stands in for what a fragment omits


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(*langs: str) -> list[Block]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) in langs:
                out.append(Block(path.name, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)))
    return out


def commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell snippet: continuations joined, comments, assignments, redirections
    and separators dropped."""
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words: list[str] = []
        redirected = False
        for token in lex:
            if token in (";", "&&", "||", "|", "&"):
                if words:
                    yield words
                words, redirected = [], False
            elif re.fullmatch(r"\d*[<>]+&?\d*", token):
                redirected = True
            elif not redirected and not (not words and re.fullmatch(r"[A-Za-z_]\w*=.*", token)):
                words.append(token)
        if words:
            yield words


def shown_commands() -> list[tuple[str, list[str]]]:
    """Commands in bash blocks, and the ``$ …`` lines of output blocks."""
    out = []
    for b in blocks("bash", "sh", "shell", "console"):
        out += [(str(b), argv) for argv in commands(b.text)]
    for b in blocks(""):
        out += [(str(b), argv) for line in b.text.splitlines() if line.startswith("$ ")
                for argv in commands(line[2:])]
    return out


COMMANDS = shown_commands()
STRATA = [(where, argv) for where, argv in COMMANDS if argv[0] == "strata"]


# --- YAML ----------------------------------------------------------------------------------------------------


def _fields(*models: type) -> set[str]:
    return {f for m in models for f in m.model_fields}  # type: ignore[attr-defined]


ANY_FIELD = _fields(Settings, RouteConfig, DeploymentConfig, LlamaCppEngineConfig, OpenAIEngineConfig,
                    SentenceTransformersEngineConfig)


def as_settings(data: Any) -> dict[str, Any] | None:
    """The config a block is (part of), completed where it is a fragment; None if it is no Strata config."""
    if isinstance(data, list):
        return {"routes": [_route(r) for r in data]}
    if not isinstance(data, dict):
        return None
    keys = set(data)
    if keys <= set(Settings.model_fields):
        return {**data, "routes": [_route(r) for r in data["routes"]]} if "routes" in data else data
    if keys <= set(RouteConfig.model_fields):
        return {"routes": [_route({"name": "r", **data})]}
    if keys <= set(DeploymentConfig.model_fields):
        return {"routes": [{"name": "r", "deployments": [{"name": "d", "engine": ENGINE, **data}]}]}
    if keys & ANY_FIELD:
        raise AssertionError(f"unknown settings {sorted(keys - ANY_FIELD)} next to Strata's {sorted(keys & ANY_FIELD)}")
    return None


def _route(r: Any) -> Any:
    """A route shown without its deployments is a fragment: give it one."""
    return {"deployments": [{"name": f"{r.get('name')}-d", "engine": ENGINE}], **r} if isinstance(r, dict) else r


@pytest.mark.parametrize("block", blocks("yaml", "yml"), ids=str)
def test_yaml_block_is_a_valid_config(block: Block, tmp_path: Path) -> None:
    text = textwrap.dedent(block.text)
    data = yaml.safe_load(text)
    config = as_settings(data)
    if config is None:
        return  # valid YAML, and not a Strata config
    path = tmp_path / "strata.yaml"
    path.write_text(text if config is data else yaml.safe_dump(config))
    load_settings(path, data_dir=tmp_path)  # a ConfigError names the field


def test_a_bare_off_in_yaml_means_off(tmp_path: Path) -> None:
    """YAML 1.1 reads ``off`` as false; the README's reference config writes ``policy: off``."""
    path = tmp_path / "strata.yaml"
    path.write_text("routes:\n  - name: r\n    context: {policy: off}\n    deployments:\n"
                    "      - {name: d, engine: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}}\n")
    assert load_settings(path).routes[0].context.policy == "off"


@pytest.mark.parametrize("block", blocks("json"), ids=str)
def test_json_block_parses(block: Block) -> None:
    json.loads(block.text)


# --- shell ---------------------------------------------------------------------------------------------------


def resolve(argv: list[str]) -> tuple[list[str], Any, list[str]]:
    """``strata deploy status chat`` -> (["deploy"], the deploy command, ["status", "chat"])."""
    cmd: Any = get_command(app)  # Typer's own click
    path: list[str] = []
    rest = argv[1:]
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        path.append(rest[0])
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    assert not hasattr(cmd, "commands"), f"`strata {' '.join(path)}` needs one of: {', '.join(cmd.commands)}"
    return path, cmd, rest


def test_docs_show_strata_commands() -> None:
    shown = {tuple(resolve(argv)[0]) for _, argv in STRATA}
    assert {("up",), ("deploy",), ("shadow", "report"), ("limits", "set"), ("cost", "report")} <= shown


@pytest.mark.parametrize(("where", "argv"), STRATA, ids=[f"{w} {' '.join(a)}"[:90] for w, a in STRATA])
def test_strata_command_exists_and_parses(where: str, argv: list[str]) -> None:
    path, cmd, rest = resolve(argv)
    try:
        cmd.make_context(" ".join(["strata", *path]), list(rest))
    except Exception as exc:  # a usage error: unknown option, bad value, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        raise AssertionError(f"{where}: `{shlex.join(argv)}`: {message}") from None
    helped = CliRunner().invoke(app, [*path, "--help"])
    assert helped.exit_code == 0, helped.output


@pytest.mark.parametrize(("where", "argv"), [c for c in COMMANDS if c[1][0] == "make"], ids=lambda x: str(x))
def test_make_target_exists(where: str, argv: list[str]) -> None:
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert set(argv[1:]) <= targets, f"{where}: {argv}"


SCRIPTS = {m.group(1) for b in blocks("python") if (m := re.match(r"# (\w+\.py)", b.text))}


@pytest.mark.parametrize(("where", "argv"), [c for c in COMMANDS if c[1][0] in ("python", "python3")],
                         ids=lambda x: str(x))
def test_python_command_runs_a_documented_script(where: str, argv: list[str]) -> None:
    assert argv[1] in SCRIPTS, f"{where}: {argv[1]} is not a script the docs show (# NAME.py blocks: {SCRIPTS})"


# --- against a real server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_strata(upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """A real Strata whose routes carry the docs' names (smollm2, minilm, chat), served by the fault upstream."""
    routes = [openai_route(name, upstream.base_url, "ok") for name in ("smollm2", "minilm", "chat")]
    proc = StrataProcess(tmp_path_factory.mktemp("docs-strata"), {"routes": routes})
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


def pasted_env(proc: StrataProcess) -> dict[str, str]:
    return {**os.environ, "STRATA_KEY": ADMIN_KEY, "STRATA_ADMIN_KEY": ADMIN_KEY}


CURLS = [(b, line) for b in blocks("bash") for line in b.text.replace("\\\n", " ").splitlines()
         if line.lstrip().startswith("curl ")]


def test_docs_show_a_curl_line() -> None:
    assert CURLS


@pytest.mark.parametrize(("block", "line"), CURLS, ids=lambda x: str(x)[:60])
def test_curl_line_works(block: Block, line: str, docs_strata: StrataProcess) -> None:
    script = line.replace(DOCUMENTED_URL, docs_strata.url) + " -sS -o /dev/null -w '%{http_code}'"
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                       env=pasted_env(docs_strata))
    assert p.stdout == "200", f"{block}: {line}\n{p.stdout}{p.stderr}"


PYTHON = blocks("python")


@pytest.mark.parametrize("block", PYTHON, ids=str)
def test_python_block_runs(block: Block, docs_strata: StrataProcess, tmp_path: Path) -> None:
    """Run as pasted (a file named in its first comment, e.g. ``# traffic.py``, gets a key and a small count)."""
    script = tmp_path / "snippet.py"
    script.write_text(block.text.replace(DOCUMENTED_URL, docs_strata.url))
    args = [ADMIN_KEY, "12"] if re.match(r"# \w+\.py", block.text) else []
    p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60,
                       env=pasted_env(docs_strata), cwd=tmp_path)
    assert p.returncode == 0, f"{block}:\n{p.stderr[-3000:]}"
