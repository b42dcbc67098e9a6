"""Structure-aware chunking: never across a section (heading); prefer paragraph, then sentence boundaries;
words only for a sentence over the budget. Overlap repeats the last sentences of a chunk in the next one.

Tokens are counted as word pieces (runs of word characters and single punctuation marks), a close, fast,
model-free estimate of a WordPiece/BPE count for English; the budget is what a chunk may hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from strata.rag.config import ChunkingConfig
from strata.rag.parse import ParsedDocument, Section

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_PARA = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class ChunkSpan:
    text: str
    start: int  # offsets into ParsedDocument.text
    end: int
    heading: str | None

    def indexed_text(self, include_heading: bool = True) -> str:
        """What is embedded and indexed: the text, after its section heading when configured."""
        return f"{self.heading}\n\n{self.text}" if include_heading and self.heading else self.text


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    para_start: bool


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def chunk(doc: ParsedDocument, cfg: ChunkingConfig | None = None,
          counter: Callable[[str], int] = count_tokens) -> list[ChunkSpan]:
    cfg = cfg or ChunkingConfig()
    out: list[ChunkSpan] = []
    for section in doc.sections:
        units = _units(section, cfg.max_tokens, counter)
        for start, end in _pack(units, cfg.max_tokens, min(cfg.overlap_tokens, cfg.max_tokens // 2)):
            out.append(ChunkSpan(doc.text[start:end], start, end, section.heading))
    return out


def _units(section: Section, budget: int, counter: Callable[[str], int]) -> list[_Unit]:
    """Sentences (with offsets into the document), each marked when it opens a paragraph."""
    units: list[_Unit] = []
    base = section.start
    for para in _spans(section.text, _PARA):
        first = True
        for s_start, s_end in _spans(section.text[para[0]:para[1]], _SENTENCE_END, para[0]):
            text = section.text[s_start:s_end]
            n = counter(text)
            if n <= budget:
                units.append(_Unit(base + s_start, base + s_end, n, first))
            else:
                for w_start, w_end, w_n in _word_windows(text, budget, counter):
                    units.append(_Unit(base + s_start + w_start, base + s_start + w_end, w_n, first))
                    first = False
            first = False
    return units


def _spans(text: str, sep: re.Pattern[str], offset: int = 0) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    for m in sep.finditer(text):
        if text[pos:m.start()].strip():
            out.append((offset + pos, offset + m.start()))
        pos = m.end()
    if text[pos:].strip():
        out.append((offset + pos, offset + len(text.rstrip())))
    return out


def _word_windows(text: str, budget: int, counter: Callable[[str], int]) -> list[tuple[int, int, int]]:
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    out: list[tuple[int, int, int]] = []
    i = 0
    while i < len(words):
        j, n = i, 0
        while j < len(words):
            w = counter(text[words[j][0]:words[j][1]])
            if n + w > budget and j > i:
                break
            n, j = n + w, j + 1
        out.append((words[i][0], words[j - 1][1], n))
        i = j
    return out


def _pack(units: list[_Unit], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing; a chunk that must end early ends at the last paragraph start past half the budget."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        j, n = i, 0
        while j < len(units) and (n + units[j].tokens <= budget or j == i):
            n, j = n + units[j].tokens, j + 1
        if j < len(units) and not units[j].para_start:
            cut = _paragraph_cut(units, i, j, budget)
            j = cut or j
        out.append((units[i].start, units[j - 1].end))
        if j >= len(units):
            break
        i = _overlap_start(units, i, j, overlap)
    return out


def _paragraph_cut(units: list[_Unit], i: int, j: int, budget: int) -> int | None:
    n = sum(u.tokens for u in units[i:j])
    for cut in range(j - 1, i, -1):
        n -= units[cut].tokens
        if units[cut].para_start and n >= budget // 2:
            return cut
    return None


def _overlap_start(units: list[_Unit], i: int, j: int, overlap: int) -> int:
    """Next chunk's first unit: back from ``j`` while the repeated sentences fit in ``overlap``; always > i."""
    k, n = j, 0
    while k - 1 > i and n + units[k - 1].tokens <= overlap:
        k, n = k - 1, n + units[k - 1].tokens
    return k
