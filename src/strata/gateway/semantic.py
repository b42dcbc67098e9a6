"""The semantic cache: a request whose question means the same as a cached one gets the cached answer.

Guards against false hits, each of which must pass:

1. **Same context.** Candidates share the route, the namespace (team or key), the endpoint, the system
   prompt, the earlier turns and every sampling parameter; only the last user turn may differ.
2. **Similar enough.** Cosine similarity of the last user turns' embeddings (the bundled MiniLM through
   an embeddings route) at or above the route's ``similarity``.
3. **Same facts.** The two questions must agree on negation (one says "not", the other doesn't),
   on every number (digits, number words and ordinals, in order), and on their named entities, in order ("from Paris to
   London" is not "from London to Paris"). These are exactly the near matches that embeddings score high
   and that would be wrong answers.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from strata.gateway.cache import Entry

Embed = Callable[..., Awaitable[list[list[float]]]]  # (texts) or (texts, parent): the request that needs them

NEGATIONS = frozenset("""not no never none nobody nothing nowhere neither nor without cannot cant can't won't wont
don't dont doesn't doesnt didn't didnt isn't isnt aren't arent wasn't wasnt weren't werent shouldn't shouldnt
wouldn't wouldnt couldn't couldnt mustn't hasn't hasnt haven't havent hadn't hadnt except excluding non w/o""".split())
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
                                                      "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
                                                      "thousand": 1000, "million": 10**6, "billion": 10**9,
                                                      "first": 1, "second": 2, "third": 3, "fourth": 4,
                                                      "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
                                                      "ninth": 9, "tenth": 10, "half": 0.5, "quarter": 0.25,
                                                      "twice": 2, "double": 2, "triple": 3, "dozen": 12}
WORD = re.compile(r"[Ww]/[Oo]\b|[A-Za-z][A-Za-z'’]*|\d+(?:[.,]\d+)*")  # "twenty-five" is two words
NOT_ENTITIES = frozenset("i what which who whom whose when where why how is are was were do does did can could "
                         "would should will shall may might must please tell give list name explain describe "
                         "the a an in on of for to and or but if".split())


def facts(text: str) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """(negated, numbers, named entities in order) of a question."""
    negated = False
    numbers: list[str] = []
    entities: list[str] = []
    for m in WORD.finditer(text):
        token = m.group(0).replace("’", "'")
        lower = token.lower()
        if lower in NEGATIONS or lower.endswith("n't"):
            negated = True
            continue
        if token[0].isdigit():
            numbers.append(token.replace(",", ""))
            continue
        if lower in NUMBER_WORDS:
            numbers.append(str(NUMBER_WORDS[lower]))
            continue
        if token[0].isupper() and lower.partition("'")[0] not in NOT_ENTITIES and (  # "I'm" is "I"
                not _sentence_start(text, m.start()) or token.isupper() and len(token) > 1):
            entities.append(lower.removesuffix("'s"))
    return negated, tuple(numbers), tuple(entities)  # in order: "12 minus 5" is not "5 minus 12"


def _sentence_start(text: str, i: int) -> bool:
    """Whether the word at ``text[i]`` starts a sentence. Looks back only over quotes and spaces: a regex search
    of the whole prefix for every word was quadratic (0.16 s for a 9,000-character prompt)."""
    j = i
    while j > 0 and text[j - 1] in "\"'(":
        j -= 1
    k = j
    while k > 0 and text[k - 1].isspace():
        k -= 1
    return k == 0 or "\n" in text[k:j] or (k < j and text[k - 1] in ".!?")


def split(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The request's context (everything but the last user turn) and that turn's text."""
    messages = body.get("messages")
    if messages is not None:
        if not messages or messages[-1].get("role") != "user" or not isinstance(messages[-1].get("content"), str):
            return None
        return {**body, "messages": messages[:-1]}, messages[-1]["content"]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return {k: v for k, v in body.items() if k != "prompt"}, prompt
    return None


@dataclass(slots=True)
class Candidate:
    text: str
    facts: tuple[bool, tuple[str, ...], tuple[str, ...]]
    entry: Entry


@dataclass(slots=True)
class Bucket:
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    items: list[Candidate] = field(default_factory=list)


@dataclass(slots=True)
class Match:
    entry: Entry
    similarity: float
    text: str


class SemanticCache:
    def __init__(self) -> None:
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()
        self.size = 0

    @staticmethod
    def context_key(route: str, namespace: str, space: str, endpoint: str, context: dict[str, Any]) -> str:
        material = {k: v for k, v in context.items() if k not in ("stream", "stream_options", "user")}
        raw = orjson.dumps([route, namespace, space, endpoint, material], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()

    def lookup(self, key: str, vector: np.ndarray, text: str, similarity: float) -> Match | None:
        bucket = self.buckets.get(key)
        if bucket is None or not bucket.items:
            return None
        sims = bucket.vectors @ vector
        want = facts(text)
        for i in np.argsort(-sims):
            if sims[i] < similarity:
                break
            cand = bucket.items[int(i)]
            if cand.facts == want and not cand.entry.expired():
                self.buckets.move_to_end(key)
                return Match(cand.entry, float(sims[i]), cand.text)
        return None

    def put(self, key: str, vector: np.ndarray, text: str, entry: Entry, max_entries: int) -> None:
        bucket = self.buckets.setdefault(key, Bucket())
        if bucket.vectors.size == 0:
            bucket.vectors = vector[None, :].astype(np.float32)
        else:
            bucket.vectors = np.vstack([bucket.vectors, vector[None, :]])
        bucket.items.append(Candidate(text, facts(text), entry))
        self.buckets.move_to_end(key)
        self.size += 1
        while self.size > max_entries and self.buckets:
            oldest_key, oldest = next(iter(self.buckets.items()))
            oldest.items.pop(0)
            oldest.vectors = oldest.vectors[1:]
            self.size -= 1
            if not oldest.items:
                del self.buckets[oldest_key]


def unit(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v)) or 1.0
    return v / n
