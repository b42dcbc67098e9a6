"""Documents to text with structure: PDF (pypdf), HTML (selectolax, Lexbor), Markdown (markdown-it-py), text.

Every format becomes a list of blocks (headings and paragraphs); ``_assemble`` joins them into one text and
cuts it into sections at the headings, with character offsets into that text, so chunks can point back.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from strata.errors import InvalidRequest

logger = logging.getLogger(__name__)

PDF, HTML, MARKDOWN, TEXT = "application/pdf", "text/html", "text/markdown", "text/plain"
_SUFFIXES = {".pdf": PDF, ".html": HTML, ".htm": HTML, ".xhtml": HTML, ".md": MARKDOWN, ".markdown": MARKDOWN,
             ".mdx": MARKDOWN}
_BLOCK_TAGS = "h1,h2,h3,h4,h5,h6,p,li,pre,blockquote,td,th,dt,dd,figcaption,caption"
_BLOCKS = frozenset(_BLOCK_TAGS.split(","))
_CONTAINERS = frozenset({"li", "td", "th", "blockquote", "dd"})
_BLANK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Section:
    heading: str | None
    text: str
    start: int  # offsets into ParsedDocument.text
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    title: str | None
    sections: list[Section] = field(default_factory=list)
    media_type: str = TEXT


@dataclass(frozen=True)
class _Block:
    text: str
    heading: bool = False


def detect_media_type(name: str, content: bytes, media_type: str | None) -> str:
    base = (media_type or "").split(";")[0].strip().lower()
    if base in (PDF, HTML, MARKDOWN, TEXT):
        return base
    if base in ("application/xhtml+xml",):
        return HTML
    if base in ("text/x-markdown",):
        return MARKDOWN
    if content[:5] == b"%PDF-":
        return PDF
    suffix = _SUFFIXES.get(PurePath(name).suffix.lower())
    if suffix:
        return suffix
    head = content[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return HTML
    return TEXT


def parse_document(name: str, content: bytes, media_type: str | None = None) -> ParsedDocument:
    """Parse one document; an unreadable one is an ``InvalidRequest`` naming it."""
    kind = detect_media_type(name, content, media_type)
    if kind == PDF:
        title, blocks = _pdf(name, content)
    elif kind == HTML:
        title, blocks = _html(_decode(content))
    elif kind == MARKDOWN:
        title, blocks = _markdown(_decode(content))
    else:
        title, blocks = None, _paragraphs(_decode(content))
    return _assemble(title or _first_heading(blocks) or PurePath(name).stem or None, blocks, kind)


def _decode(content: bytes) -> str:
    return content.decode("utf-8", errors="replace").replace("\r\n", "\n")


def _paragraphs(text: str) -> list[_Block]:
    return [_Block(" ".join(p.split())) for p in _BLANK.split(text) if p.strip()]


def _first_heading(blocks: list[_Block]) -> str | None:
    return next((b.text for b in blocks if b.heading), None)


def _pdf(name: str, content: bytes) -> tuple[str | None, list[_Block]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError) as exc:
        raise InvalidRequest(f"cannot read PDF {name!r}: {exc}", param="file") from None
    blocks: list[_Block] = []
    for number, page in enumerate(pages, 1):
        paras = _paragraphs(page)
        if paras:
            blocks.append(_Block(f"Page {number}", heading=True))
            blocks.extend(paras)
    return (str(meta_title) if meta_title else None), blocks


def _html(text: str) -> tuple[str | None, list[_Block]]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    tree.strip_tags(["script", "style", "noscript", "template", "svg", "nav"])
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else None
    blocks: list[_Block] = []
    for node in tree.css(_BLOCK_TAGS):
        if node.tag in _CONTAINERS and _has_block_child(node):
            continue  # its block children carry the text
        words = " ".join(node.text(deep=True).split())
        if words:
            tag = node.tag or ""
            blocks.append(_Block(words, heading=tag[:1] == "h" and tag[1:].isdigit()))
    return title or None, blocks


def _has_block_child(node: Any) -> bool:
    return any(child.tag in _BLOCKS for child in node.traverse(include_text=False) if child.mem_id != node.mem_id)


def _markdown(text: str) -> tuple[str | None, list[_Block]]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[_Block] = []
    in_heading = False
    for tok in tokens:
        if tok.type == "heading_open":
            in_heading = True
        elif tok.type == "heading_close":
            in_heading = False
        elif tok.type == "inline":
            words = " ".join(_inline_text(tok).split())
            if words:
                blocks.append(_Block(words, heading=in_heading))
        elif tok.type in ("fence", "code_block") and tok.content.strip():
            blocks.append(_Block(tok.content.rstrip()))
    return None, blocks


def _inline_text(tok: object) -> str:
    children = getattr(tok, "children", None) or []
    parts = [c.content if c.type in ("text", "code_inline") else " " for c in children
             if c.type in ("text", "code_inline", "softbreak", "hardbreak")]
    return "".join(parts) if children else str(getattr(tok, "content", ""))


def _assemble(title: str | None, blocks: list[_Block], media_type: str) -> ParsedDocument:
    """Join blocks with blank lines; a section is the text after one heading up to the next (text before any
    heading: a section without one)."""
    spans: list[tuple[str | None, int, int]] = []
    heading: str | None = None
    pos = sec_start = 0
    for block in blocks:
        if block.heading:
            if pos - 2 > sec_start:
                spans.append((heading, sec_start, pos - 2))
            heading, sec_start = block.text, pos + len(block.text) + 2
        pos += len(block.text) + 2
    if pos - 2 > sec_start:
        spans.append((heading, sec_start, pos - 2))
    text = "\n\n".join(b.text for b in blocks)
    sections = [Section(h, text[a:b], a, b) for h, a, b in spans]
    return ParsedDocument(text, title, sections, media_type)
