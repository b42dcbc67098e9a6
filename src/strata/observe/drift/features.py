"""What one observed request becomes: prompt/answer text, token counts, refusal, language, tool call.

Pure functions; the language detector is a stopword/script heuristic (no model, microseconds per text): the
script decides for non-Latin text (``Cyrl``, ``Arab``, ``Hani``, ``Jpan``, ``Hang``, ``Grek``, ``Hebr``,
``Deva``, ``Thai``), stopwords for Latin text (en, de, fr, es, it, pt, nl); ``und`` when unsure. Drift needs
a stable label per text, not a perfect one: a shift from English to German moves the mix either way.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the a an and of to in is are was were be it that this what which who how why when you i "
                    "for on with as at by from or not do does can my your me".split()),
    "de": frozenset("der die das und ist nicht ein eine einen zu den dem des mit auf für von im sich auch wie "
                    "was warum wer ich du sie wir ihr es bitte kann können mir mein meine über oder aber".split()),
    "fr": frozenset("le la les et est un une des du de en que qui pour pas dans sur avec ce cette je vous nous il "
                    "elle ne au aux mon ma mes pourquoi comment quel quelle".split()),
    "es": frozenset("el la los las y es un una de del en que para por con no se su al lo como qué por qué "
                    "cómo yo tú usted nosotros mi muy pero".split()),
    "it": frozenset("il lo la gli le e è un una di del della in che per non con si da al come perché io tu "
                    "noi mi mio sono".split()),
    "pt": frozenset("o a os as e é um uma de do da em que para não com se por ao como porque eu você nós meu "
                    "minha são".split()),
    "nl": frozenset("de het een en is van in dat niet op te met voor zijn er aan ook als wat waarom hoe ik je "
                    "jij wij mijn".split()),
}
SCRIPTS = (("CYRILLIC", "Cyrl"), ("ARABIC", "Arab"), ("CJK", "Hani"), ("HIRAGANA", "Jpan"), ("KATAKANA", "Jpan"),
           ("HANGUL", "Hang"), ("GREEK", "Grek"), ("HEBREW", "Hebr"), ("DEVANAGARI", "Deva"), ("THAI", "Thai"))
LANGUAGES = (*STOPWORDS, *sorted({code for _, code in SCRIPTS}), "und")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|unfortunately,? i|as an ai\b|i (?:can ?not|can't|cannot|"
    r"won't|will not|am not able to|am unable to|'m unable to|'m not able to|must decline|do not feel comfortable))",
    re.IGNORECASE)


def language(text: str, sample_chars: int = 600) -> str:
    """A language or script code for ``text`` (see the module docstring); ``und`` when unsure."""
    head = text[:sample_chars]
    script = _script(head)
    if script is not None:
        return script
    words = [w.lower() for w in _WORD.findall(head)]
    if not words:
        return "und"
    scores = {lang: sum(w in stop for w in words) for lang, stop in STOPWORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] == 0 or (ranked[0] == ranked[1] and len(words) > 2):
        return "und"
    return best


def _script(text: str) -> str | None:
    """The non-Latin script of most letters, or None for Latin (or no letters)."""
    counts: dict[str, int] = {}
    letters = 0
    for ch in text:
        if not ch.isalpha():
            continue
        letters += 1
        if ord(ch) < 0x250:  # Latin and Latin-1/Extended-A/B
            continue
        name = unicodedata.name(ch, "")
        for prefix, code in SCRIPTS:
            if name.startswith(prefix):
                counts[code] = counts.get(code, 0) + 1
                break
    if not counts or letters == 0:
        return None
    code, n = max(counts.items(), key=lambda kv: kv[1])
    if code == "Hani" and counts.get("Jpan"):
        code = "Jpan"  # kanji with kana is Japanese
    return code if n * 2 >= letters else None


def is_refusal(answer: str) -> bool:
    """The answer opens by declining ("I'm sorry, but I can't…", "As an AI…")."""
    return bool(_REFUSAL.match(answer[:200]))


def prompt_text(body: dict[str, Any]) -> str:
    """What the caller asked: the last user message (chat), or the prompt (completions)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content(message.get("content"))
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return " ".join(str(p) for p in prompt)
    return str(prompt or "")


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(frozen=True, slots=True)
class Observation:
    """One sampled request, waiting for its embeddings (texts are dropped once embedded)."""

    route: str
    deployment: str | None
    at: float  # epoch seconds
    prompt: str
    answer: str
    prompt_tokens: int
    answer_tokens: int
    tool_call: bool
    role: str | None = None  # of the deployment that answered (canary, primary): feeds the canary analysis

    @property
    def language(self) -> str:
        return language(self.prompt)

    @property
    def refusal(self) -> bool:
        return is_refusal(self.answer)
