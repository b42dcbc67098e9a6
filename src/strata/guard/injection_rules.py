"""Transparent prompt-injection heuristics: named regular expressions, each with a weight a person can read.

A rule is evidence, not a verdict. The heuristic score of a text is the noisy-OR of the weights of the rules
that fire, ``1 - prod(1 - w)``: one strong rule (0.9) is enough on its own, two weak ones (0.5, 0.5) add up to
0.75. Weights were set by hand from how specific each pattern is, before any data was scored, and are not fitted.

Each rule is tried on the text as written and on a normalised copy (NFKC, zero-width characters removed,
common leetspeak digits mapped to letters, letters separated by dashes or spaces joined up), so ``1gn0r3`` and
``I-g-n-o-r-e`` count as ``ignore``. English and German, since the training data has both (and the Spanish
"olvida las instrucciones" seen in its train split). Patterns are written in lower case and run on lower-cased
text. Cost: about 2 µs per character of text on this machine (two passes of ~20 patterns).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_FLAGS = re.S  # patterns are lower case and match lower-cased text: faster than re.I


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]


def _rule(name: str, weight: float, pattern: str) -> Rule:
    return Rule(name, weight, re.compile(pattern, _FLAGS))


_PRIOR = r"(previous|prior|above|earlier|preceding|initial|original|old|system|all|every|any|your|the|these|those)"
_ORDERS = (r"(instructions?|prompts?|rules|directions|guidelines|directives|tasks?|context|orders|commands|policies|"
           r"information|documents|articles)")
_DE_PRIOR = r"(alle[ns]?|die|deine|ihre|sämtliche|vorherigen?|bisherigen?|obigen?|vorigen?|früheren?|bis\s*herigen)"
_DE_ORDERS = r"(anweisungen|instruktionen|regeln|aufgaben|befehle|vorgaben|richtlinien|angaben|informationen)"

RULES: tuple[Rule, ...] = (
    _rule("ignore_previous", 0.9,
          rf"\b(ignore|disregard|forget|skip|override|bypass|drop|abandon)\b\W+(\w+\W+){{0,2}}?{_PRIOR}\W+"
          rf"(\w+\W+){{0,1}}?{_ORDERS}\b"),
    _rule("ignore_previous_de", 0.9,
          rf"\b(ignorier\w*|vergiss|vergessen\s+sie|missachte\w*|übergeh\w*)\b\W+(\w+\W+){{0,2}}?{_DE_PRIOR}\W+"
          rf"(\w+\W+){{0,1}}?{_DE_ORDERS}\b"),
    _rule("ignore_previous_de_after", 0.8,
          rf"\b(obigen|vorherigen|bisherigen|vorangegangenen)\s+(\w+\s+){{0,3}}?(ignorieren|vergessen|streichen)\b|"
          rf"\babweichend\s+(von|zu)\s+(den\s+)?(vorherigen|bisherigen|obigen)\s+{_DE_ORDERS}"),
    _rule("ignore_previous_es", 0.9,
          r"\b(olvida|ignora|olvidar)\w*\s+(\w+\s+){0,2}?(instrucciones|reglas|órdenes)\b"),
    _rule("forget_everything", 0.6,
          r"\b(forget|ignore)\s+(about\s+)?everything\s*[,.!:;]|\bvergiss\s+alles\s*[,.!:;]|"
          r"\b(disregard\w*|ignore|ignoring|not\s+by)\s+the\s+(articles|documents|context)\b"),
    _rule("ignore_above", 0.7,
          r"\b(ignore|disregard|forget)\s+(everything\s+|all\s+|the\s+(text\s+)?|what\s+(was|is)\s+written\s+)?"
          r"(above|before\s+this|you\s+were\s+told)\b|\b(ignorier\w*|vergiss)\s+(alles\s+)?(oben|davor|bisher)\w*\b"),
    _rule("new_instructions", 0.5,
          r"\b(new|updated|real|actual|true|priority)\s+(system\s+)?(instructions?|task|rules?|directive|prompt)\b\s*"
          r"(:|is|are|from|assigned|effective|follow)|\bneue\s+(system)?(anweisung|aufgabe|regel)\w*\s*:|"
          r"\bnew\s+(instructions|tasks)\s+follow|\bfolgen\s+neue\s+(anweisungen|aufgaben)\b"),
    _rule("end_of_input", 0.6,
          r"\b(end\s+of\s+(user\s+)?(input|prompt|ticket|document|text)|ende\s+der\s+(nutzer)?eingabe)\b"),
    _rule("persona_switch", 0.5,
          r"\b(you\s+are\s+(now|no\s+longer)|from\s+now\s+on,?\s+you\s+(are|will|must)|you\s+will\s+now\s+act|"
          r"du\s+bist\s+(jetzt|nun|ab\s+sofort|ab\s+jetzt)|ab\s+sofort\s+bist\s+du)\b"),
    _rule("jailbreak_persona", 0.9,
          r"\b(do\s+anything\s+now|dan\s+mode|developer\s+mode\s+(enabled|activated|on)|enable\s+developer\s+mode|"
          r"jailbreak\s+successful|jailbroken|anti-?gpt|strive\s+to\s+avoid\s+norms|"
          r"stay\w*\s+(\w+\s+){0,2}in\s+(their\s+|your\s+|his\s+|her\s+)?(roles?|character)|"
          r"bleib\w*\s+(\w+\s+){0,2}in\s+(der|ihren|deiner|seiner)\s+rollen?)\b|\byou\s+are\s+(now\s+)?dan\b"),
    _rule("evil_ai", 0.7, r"\b(evil|malicious|unfiltered|böse|bösartige)\s+(ai|ki|assistant|assistent)\b"),
    _rule("no_restrictions", 0.6,
          r"\b(no|without\s+any|without|free\s+(of|from))\s+(content\s+)?(restrictions|limits|filters?|rules|"
          r"guidelines|policy|policies|censorship|disclaimers?)\b|\b(unfiltered|uncensored|unrestricted)\b|"
          r"\b(ohne|keine)\s+(einschränkungen|regeln|filter|richtlinien)\b|\bregeln\s+deaktiviert\b"),
    _rule("safety_disabled", 0.8,
          r"\b(safety|content|security)\s+(rules|filters?|policies|policy|guidelines)\s+(are\s+|is\s+|have\s+been\s+|"
          r"has\s+been\s+)?(disabled|suspended|lifted|removed|off|turned\s+off)\b|"
          r"\b(restrictions|rules)\s+(are\s+)?(lifted|removed|suspended|disabled)\b|"
          r"\b(admin|god|sudo|root|debug)\s+mode\b|\badmin(istrator)?[- ]override\b"),
    _rule("prompt_exfiltration", 0.8,
          r"\b(reveal|show|print|repeat|output|display|leak|paste|quote|recite|spell\s+out|translate|tell\s+me|"
          r"give\s+me|what\s+(is|are|were))\b\W+(\w+\W+){0,3}?(your|the)\s+(full\s+|exact\s+|hidden\s+|secret\s+|"
          r"initial\s+|original\s+|confidential\s+)*(system\s+(prompt|message|instructions)|initiali[sz]ation\s+text|"
          r"hidden\s+(prompt|instructions)|initial\s+(prompt|instructions)|instructions|prompt|configuration|"
          r"developer\s+message)\b"),
    _rule("repeat_above", 0.8,
          r"\b(repeat|print|output|quote)\s+(everything|all|the\s+(words|text))\s+(above|before)|"
          r"\bwhat\s+were\s+you\s+told\s+before\b|\bwhat\s+(is|was)\s+written\s+(at\s+the\s+beginning|above)\b"),
    _rule("prompt_exfiltration_de", 0.8,
          r"\b(zeig\w*|nenn\w*|gib|verrat\w*|wiederhol\w*|sag)\b\W+(\w+\W+){0,5}?(dein\w*|ihr\w*|die)\s+"
          r"(system-?prompt|system-?nachricht|anweisungen|instruktionen|regeln)\b"),
    _rule("chat_template_tokens", 0.8,
          r"<\|(im_start|im_end|system|endoftext)\|>|\[/?inst\]|</?(system|user|assistant)>|"
          r"#{3}\s*(system|new\s+task|instruction)|\bbegin\s+admin\b"),
    _rule("addressed_to_model", 0.7,
          r"\b(note|message|instruction|attention|hinweis|notice|p\.?s\.?)\s+(to|for|an)\s+(the\s+|all\s+|any\s+)?"
          r"(ai|assistants?|llms?|language\s+models?|models?|ki|ki-systeme|chatbots?|agents?)\b|"
          r"\b(if\s+you\s+are|you're)\s+an?\s+(ai|llm|language\s+model|assistant)\b|"
          r"\b(ai|llm)\s+(assistants?|models?|agents?|reviewers?|tools?)\s+(reading|processing)\s+this\b|"
          r"\b(dear|attention)\s+(ai|assistant|language\s+model|llm)\b|^\W*(ai\s+agent|assistant)\s*(:|,)\s"),
    _rule("decode_and_obey", 0.6,
          r"\b(decode|reverse|translate\s+from\s+rot13|follow)\b.{0,60}\b(and|then)\s+(do|follow|obey|execute|act)\b"),
)

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPACED = re.compile(r"\b(?:\w[-\s.]){3,}\w\b")


def normalise(text: str) -> str:
    """A copy of ``text`` with common obfuscations undone, for matching only."""
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    text = _SPACED.sub(lambda m: re.sub(r"[-\s.]", "", m.group(0)), text)
    return text.translate(_LEET)


def fired(text: str) -> list[Rule]:
    """The rules that match ``text`` as written or once normalised (both lower-cased)."""
    lower = text.lower()
    plain = normalise(text).lower()
    if plain == lower:
        return [r for r in RULES if r.pattern.search(lower)]
    return [r for r in RULES if r.pattern.search(lower) or r.pattern.search(plain)]


def heuristic_score(text: str) -> float:
    """Noisy-OR of the weights of the rules that fire: 0 when none does."""
    miss = 1.0
    for rule in fired(text):
        miss *= 1.0 - rule.weight
    return 1.0 - miss
