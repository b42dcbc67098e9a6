"""Built-in chat templates for llama.cpp models whose own template cannot describe tools.

``chatml-tools`` is ChatML (SmolLM2, Qwen and many small models speak it) with the Hermes/Qwen tool
convention: the tools' JSON schemas in the system turn, calls as ``<tool_call>{"name", "arguments"}</tool_call>``,
results as ``<tool_response>`` in a user turn. llama.cpp's template analysis recognises the convention, so
it parses the model's calls into OpenAI ``tool_calls`` (and streams them as deltas).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from strata.errors import ConfigError

BUILTIN = ("chatml-tools",)  # files next to this module: NAME.jinja
# bundled models whose own template has no tool support, and the built-in one they get by default
DEFAULTS = {"bundled:smollm2": "chatml-tools"}


def chat_template(spec: str | None, model: str, deployment: str) -> str | None:
    """The template text to give llama.cpp, or None for the model's own."""
    spec = spec or DEFAULTS.get(model)
    if spec is None or spec == "model":
        return None
    if spec in BUILTIN:
        return files(__package__ or "strata.engines").joinpath(f"{spec}.jinja").read_text()
    path = Path(spec).expanduser()
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"deployment {deployment}: cannot read chat_template {spec!r}: {exc.strerror}") from None
