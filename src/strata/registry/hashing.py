"""Content hashes of model artifacts: the SHA-256 of a file, or of a directory's manifest (every file's
relative path and SHA-256, sorted), so the same weights hash the same wherever they are copied."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file, or of a directory's manifest (hidden files and caches left out)."""
    if path.is_file():
        return f"sha256:{file_sha256(path)}"
    lines = []
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = item.relative_to(path)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        lines.append(f"{rel.as_posix()}\t{file_sha256(item)}\n")
    return f"sha256:{hashlib.sha256(''.join(lines).encode()).hexdigest()}"
