"""Pipeline steps: each maps input records to output records and names, for every output, the input records
it came from (``Out.sources``), which is what record-level lineage is built from.

A step is versioned by its code (the SHA-256 of its function's source, first 12 hex digits) unless it declares
a ``version``; with its params' hash and its input's content hash that is the step cache key. Built-ins:
parse, clean, deduplicate, chunk, split, label, embed; a pipeline may name any ``module:function`` too.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import inspect
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from strata.config.base import Strict
from strata.data.records import Record
from strata.errors import InvalidRequest

SyncEmbed = Callable[[list[str]], list[list[float]]]


@dataclass(slots=True)
class Out:
    """An output record: its data, the input ids it came from, and its id (None: keep the one source's id)."""

    data: dict[str, Any]
    sources: list[str]
    id: str | None = None


@dataclass(slots=True)
class StepContext:
    embed: SyncEmbed | None = None
    invocations: dict[str, int] = field(default_factory=dict)  # step name -> times its function ran


StepFn = Callable[[Sequence[Record], Any, StepContext], list[Out]]


@dataclass(frozen=True, slots=True)
class StepDef:
    name: str
    fn: StepFn
    params: type[Strict]
    version: str

    def parse_params(self, raw: dict[str, Any]) -> Strict:
        try:
            return self.params.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidRequest(f"step {self.name}: params.{where}: {err['msg']}", param="steps") from None


def code_version(fn: Callable[..., Any]) -> str:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


# parse


class ParseParams(Strict):
    keep_content: bool = Field(False, description="Keep the base64 content next to the parsed text")


def parse(records: Sequence[Record], p: ParseParams, ctx: StepContext) -> list[Out]:
    """Documents to text with ``strata.rag.parse`` (PDF, HTML, Markdown, text); ``title`` added."""
    from strata.rag.parse import parse_document

    out = []
    for r in records:
        d = dict(r.data)
        if isinstance(d.get("content"), str) and d.get("content_encoding") == "base64":
            raw = base64.b64decode(d["content"])
        elif isinstance(d.get("text"), str):
            raw = d["text"].encode()
        else:
            out.append(Out(d, [r.id]))
            continue
        doc = parse_document(str(d.get("name") or r.id), raw, d.get("media_type"))
        d.update(text=doc.text, title=doc.title, media_type=doc.media_type)
        if not p.keep_content:
            d.pop("content", None)
            d.pop("content_encoding", None)
        out.append(Out(d, [r.id]))
    return out


# clean


class CleanParams(Strict):
    fields: list[str] = Field(default_factory=lambda: ["text"], description="String fields to normalise")
    unicode_form: str = Field("NFKC", pattern="^(NFC|NFKC|NFD|NFKD)$")
    collapse_whitespace: bool = True
    drop_empty: bool = Field(True, description="Drop a record whose fields are all empty after cleaning")


_WS = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


def clean(records: Sequence[Record], p: CleanParams, ctx: StepContext) -> list[Out]:
    out = []
    for r in records:
        d = dict(r.data)
        for f in p.fields:
            if isinstance(d.get(f), str):
                v = unicodedata.normalize(p.unicode_form, d[f])  # type: ignore[arg-type]
                if p.collapse_whitespace:
                    v = _BLANK_LINES.sub("\n\n", "\n".join(_WS.sub(" ", line).strip() for line in v.split("\n")))
                d[f] = v.strip()
        if p.drop_empty and not any(_text(d, f) for f in p.fields):
            continue
        out.append(Out(d, [r.id]))
    return out


# deduplicate


class DedupParams(Strict):
    fields: list[str] = Field(default_factory=lambda: ["text"], description="Fields compared")
    near: bool = Field(False, description="Also drop near-duplicates (MinHash LSH over word 3-grams)")
    threshold: float = Field(0.8, gt=0, lt=1, description="Estimated Jaccard similarity that counts as near")
    num_perm: int = Field(128, ge=16, le=1024)


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def deduplicate(records: Sequence[Record], p: DedupParams, ctx: StepContext) -> list[Out]:
    """Keeps the first of each group; its ``sources`` name every record it stands for."""
    kept: dict[str, Out] = {}
    order: list[str] = []
    for r in records:
        key = hashlib.sha256("\x1f".join(_norm(_text(r.data, f)) for f in p.fields).encode()).hexdigest()
        if key in kept:
            kept[key].sources.append(r.id)
        else:
            kept[key] = Out(dict(r.data), [r.id])
            order.append(key)
    outs = [kept[k] for k in order]
    return _near_dedup(outs, p) if p.near else outs


def _near_dedup(outs: list[Out], p: DedupParams) -> list[Out]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=p.threshold, num_perm=p.num_perm)
    result: list[Out] = []
    for o in outs:
        words = _norm(" ".join(_text(o.data, f) for f in p.fields)).split()
        shingles = {" ".join(words[j:j + 3]) for j in range(max(1, len(words) - 2))}
        m = MinHash(num_perm=p.num_perm, seed=1)
        for s in shingles:
            m.update(s.encode())
        hits = lsh.query(m)
        if hits:
            result[min(int(h) for h in hits)].sources.extend(o.sources)
            continue
        lsh.insert(str(len(result)), m)
        result.append(o)
    return result


# chunk


class ChunkParams(Strict):
    max_tokens: int = Field(256, ge=16, le=8192)
    overlap_tokens: int = Field(32, ge=0)
    field: str = Field("text", description="The field holding the document text")


def chunk(records: Sequence[Record], p: ChunkParams, ctx: StepContext) -> list[Out]:
    """One record per chunk (``strata.rag.chunk``), id ``<document id>#<n>``, the document's other fields kept."""
    from strata.rag.chunk import chunk as rag_chunk
    from strata.rag.config import ChunkingConfig
    from strata.rag.parse import parse_document

    cfg = ChunkingConfig(max_tokens=p.max_tokens, overlap_tokens=p.overlap_tokens)
    out = []
    for r in records:
        text = _text(r.data, p.field)
        if not text:
            continue
        doc = parse_document(str(r.data.get("name") or r.id), text.encode(), r.data.get("media_type"))
        for n, span in enumerate(rag_chunk(doc, cfg)):
            d = {k: v for k, v in r.data.items() if k not in (p.field, "content", "content_encoding")}
            d.update({p.field: span.text, "document": r.id, "chunk": n, "start": span.start, "end": span.end,
                      "heading": span.heading})
            out.append(Out(d, [r.id], f"{r.id}#{n}"))
    return out


# split


class SplitParams(Strict):
    test: float = Field(0.2, ge=0, le=1, description="Share of records in the test split")
    validation: float = Field(0.0, ge=0, le=1, description="Share of records in the validation split")
    seed: str = Field("", description="Salt of the hash: another seed, another (stable) split")
    field: str = "split"


def split(records: Sequence[Record], p: SplitParams, ctx: StepContext) -> list[Out]:
    """Deterministic by record id: SHA-256(seed, id) as a number in [0, 1) picks the split, so a record keeps
    its split when others are added or removed."""
    out = []
    for r in records:
        x = int(hashlib.sha256(f"{p.seed}\x1f{r.id}".encode()).hexdigest()[:15], 16) / 16**15
        name = "test" if x < p.test else "validation" if x < p.test + p.validation else "train"
        out.append(Out({**r.data, p.field: name}, [r.id]))
    return out


# label


class LabelRule(Strict):
    label: str
    contains: str | None = Field(None, description="Case-insensitive substring of the field")
    match: str | None = Field(None, description="A regular expression searched in the field")
    field: str = "text"


class LabelParams(Strict):
    field: str = Field("label", description="Where the label is written")
    rules: list[LabelRule] = Field(default_factory=list, description="First matching rule wins")
    mapping: dict[str, str] | None = Field(None, description="Label from another field's value: {value: label}")
    source: str | None = Field(None, description="The field mapping reads")
    default: str | None = Field(None, description="Label when nothing matches (None: leave the field out)")


def label(records: Sequence[Record], p: LabelParams, ctx: StepContext) -> list[Out]:
    patterns = [(rule, re.compile(rule.match) if rule.match else None) for rule in p.rules]
    out = []
    for r in records:
        value: str | None = None
        if p.mapping is not None and p.source is not None:
            value = p.mapping.get(str(r.data.get(p.source)))
        for rule, pattern in patterns:
            if value is not None:
                break
            text = _text(r.data, rule.field)
            if (rule.contains is not None and rule.contains.casefold() in text.casefold()) or \
                    (pattern is not None and pattern.search(text)):
                value = rule.label
        value = value if value is not None else p.default
        out.append(Out({**r.data, p.field: value} if value is not None else dict(r.data), [r.id]))
    return out


# embed


class EmbedParams(Strict):
    field: str = "text"
    into: str = Field("embedding", description="Where the vector is written")
    batch: int = Field(32, ge=1, le=2048)


def embed(records: Sequence[Record], p: EmbedParams, ctx: StepContext) -> list[Out]:
    """Vectors from the injected embed callable (the gateway's: the ``data.embeddings_route``, accounted)."""
    if ctx.embed is None:
        raise InvalidRequest("the embed step needs an embeddings route: run the pipeline through the gateway "
                             "(POST /admin/pipelines/runs)", param="steps")
    out: list[Out] = []
    for i in range(0, len(records), p.batch):
        batch = records[i:i + p.batch]
        vectors = ctx.embed([_text(r.data, p.field) for r in batch])
        out.extend(Out({**r.data, p.into: [round(float(x), 6) for x in v]}, [r.id]) for r, v in zip(batch, vectors,
                                                                                                   strict=True))
    return out


BUILTINS: dict[str, tuple[StepFn, type[Strict]]] = {
    "parse": (parse, ParseParams), "clean": (clean, CleanParams), "deduplicate": (deduplicate, DedupParams),
    "chunk": (chunk, ChunkParams), "split": (split, SplitParams), "label": (label, LabelParams),
    "embed": (embed, EmbedParams),
}


class AnyParams(Strict):
    """A custom step's params: passed through as given."""

    model_config = ConfigDict(extra="allow")


def resolve(name: str, version: str | None = None) -> StepDef:
    """A built-in by name, or ``package.module:function`` (called as ``fn(records, params, ctx)``)."""
    if name in BUILTINS:
        fn, params = BUILTINS[name]
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidRequest(f"step {name!r}: cannot load it ({exc})", param="steps") from None
        params = getattr(fn, "Params", AnyParams)
    else:
        raise InvalidRequest(f"unknown step {name!r}; built-ins: {', '.join(BUILTINS)}, or module:function",
                             param="steps")
    return StepDef(name, fn, params, version or code_version(fn))
