"""PII and secrets: regular expressions with checksums, no NLP model.

Why not presidio-analyzer: its ``AnalyzerEngine`` loads a spaCy model (a download this machine cannot
make) even when only pattern recognizers are wanted, and its pattern recognizers are regexes plus the same
checksums (Luhn, IBAN mod-97) written here in ~200 lines, with no names or addresses detection either way
without the NER model. Each kind has a validator that rejects look-alikes (Luhn-invalid numbers, dates,
version strings); overlapping matches keep the first kind in ``PII_KINDS``/``SECRET_KINDS`` order.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import Field

from strata.config.base import Strict
from strata.guard.base import Finding, GuardContext, GuardSpec

Check = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # finding detector, e.g. "pii.email"
    token: str  # the replacement, e.g. "[EMAIL]"
    pattern: re.Pattern[str]
    check: Check | None = None
    group: int = 0  # the part of the match that is the value (a keyword may lead it)
    fit: Callable[[str], int] | None = None  # length of the valid value at the match's start (0: none)


def luhn(digits: str) -> bool:
    total, odd = 0, True
    for ch in reversed(digits):
        d = int(ch)
        if not odd:
            d = d * 2 - 9 if d > 4 else d * 2
        total, odd = total + d, not odd
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"4|5[0-8]|2[2-7]|3[47]|3[0689]|35|6")  # 50, 56-58: Maestro


def _card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits):
        return False
    return luhn(digits) and len(set(digits)) > 1


IBAN_LENGTHS = {"AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
                "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
                "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
                "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26}


def iban_valid(text: str) -> bool:
    s = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2], len(s)) != len(s) or not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban_fit(text: str) -> int:
    """The IBAN's length in ``text`` (spaces included), 0 if none: the pattern may run on into a word after it
    ("… 0130 00 today"), so the value is cut at its country's length, at a space or the end."""
    want = IBAN_LENGTHS.get(text[:2].upper())
    if want is None:  # no known length to cut at: the whole match, in one case (not "AB12… is out")
        return len(text) if _one_case(text) and iban_valid(text) else 0
    seen = 0
    for i, ch in enumerate(text):
        seen += ch != " "
        if seen == want:
            rest = text[i + 1:]
            return i + 1 if (not rest or rest[0] == " ") and iban_valid(text[:i + 1]) else 0
    return 0


def _one_case(text: str) -> bool:
    return text.isupper() or text.islower()


_IMAGE_TLD = re.compile(r"(?i)@(?:.*\.)?(?:png|jpe?g|gif|webp|svg|avif|bmp|tiff?|ico|heic)$|@\d+(?:\.\d+)?x\.")


def _email(text: str) -> bool:
    """Not a file name with a scale suffix or an image extension (``logo@2x.png``)."""
    return _IMAGE_TLD.search(text) is None


def _ipv6(text: str) -> bool:
    if text.count(":") < 2 or not re.search(r"[0-9a-fA-F]{3}", text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 9 <= len(digits) <= 15 and len(set(digits)) > 2


_PLACEHOLDER = re.compile(r"[$<{%*]|.*(?:environ|getenv)|x+$", re.I)


def _secret_value(s: str) -> bool:
    """A value after a secret keyword: letters and digits, not a placeholder (``${KEY}``, ``<token>``,
    ``os.environ[…]``, ``****``); 20+ characters must look random (or mix cases and digits like a password)."""
    if _PLACEHOLDER.match(s) or not (_LETTER.search(s) and _DIGIT.search(s)):
        return False
    if len(s) < 20:
        return True
    return _high_entropy(s) or (_UPPER.search(s) is not None and _LOWER.search(s) is not None)


_LETTER, _DIGIT, _UPPER, _LOWER = (re.compile(p) for p in (r"[A-Za-z]", r"\d", r"[A-Z]", r"[a-z]"))
_HASH = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}")


def entropy(s: str) -> float:
    counts = {c: s.count(c) for c in set(s)}
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def _high_entropy(s: str) -> bool:
    return (_LETTER.search(s) is not None and _DIGIT.search(s) is not None and entropy(s) >= 3.5
            and not _HASH.fullmatch(s.lower()))  # hashes: not secrets


_B = r"(?<![\w@.+-])"  # not inside a longer word, address or number
_E = r"(?![\w@-]|\.\w)"
_NOT_IN_GROUPS = r"(?<!\d[ .-])"  # not a later group of a longer run of digit groups (an IBAN's "DE44 5001 …")
PII_KINDS: dict[str, Kind] = {k.name.split(".")[1]: k for k in (
    Kind("pii.email", "[EMAIL]", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                                            r"\.[A-Za-z]{2,24}(?![\w-])"), _email),
    Kind("pii.card", "[CARD]", re.compile(_B + _NOT_IN_GROUPS + r"\d(?:[ -]?\d){12,18}" + _E), _card),
    Kind("pii.iban", "[IBAN]", re.compile(r"(?i)(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![\w])"),
         fit=_iban_fit),
    Kind("pii.ssn", "[SSN]", re.compile(_B + r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}" + _E)),
    Kind("pii.nino", "[NINO]", re.compile(r"(?i)(?<![\w])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                                          r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w])"), _one_case),
    Kind("pii.phone", "[PHONE]", re.compile(
        _B + _NOT_IN_GROUPS
        + r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"  # +44 20 7946 0958
        r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (415) 555-0132
        r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 415-555-0132
        r"|0\d{2,4} \d{3,4} \d{3,4})" + _E), _phone),  # 020 7946 0958
    Kind("pii.ipv4", "[IP]", re.compile(r"(?<![\w.])(?<!v)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                                        r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)")),
    Kind("pii.ipv6", "[IP]", re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"), _ipv6),
)}

_V = r"[^\s\"'`,;<>]"  # a character of a secret value
SECRET_KINDS: dict[str, Kind] = {k.name.split(".")[1]: k for k in (
    Kind("secret.private_key", "[PRIVATE_KEY]", re.compile(
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)")),
    Kind("secret.jwt", "[JWT]", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    Kind("secret.openai", "[API_KEY]", re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
         lambda s: _high_entropy(s[3:])),
    Kind("secret.aws", "[API_KEY]", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    Kind("secret.github", "[API_KEY]", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{60,255})")),
    Kind("secret.slack", "[API_KEY]", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    Kind("secret.token", "[TOKEN]", re.compile(
        r"(?i)(?:bearer|token|api[_ -]?key|secret(?:[_ -]?key)?|password|passwd|pwd|passphrase|access[_ -]?key)"
        r"(?![\w-])[\"']?"  # a whole keyword: not password_policy, tokens, secret_name
        r"(?:\s*(?:[:=]|=>)\s*[\"']?"  # password: x, SECRET_KEY = 'x'
        r"|\s+(?:(?:is|was)\s+)?[\"']?(?-i:(?=" + _V + r"*\d)(?=" + _V + r"*[A-Z]|" + _V + r"{20})"
        r"(?=" + _V + r"*[a-z]|" + _V + r"{20})))"  # prose (the token is x): a mixed-case value or a long one
        r"(" + _V + r"{5,511}[^\s\"'`,;<>.:!?)\]}])"), _secret_value, 1),
)}


def find(text: str, kinds: Sequence[Kind]) -> list[Finding]:
    """Every kind's validated matches in ``text``, overlaps dropped (the earlier kind wins), by position."""
    taken: list[Finding] = []
    for kind in kinds:
        for m in kind.pattern.finditer(text):
            start, end = m.span(kind.group)
            value = m.group(kind.group)
            if kind.fit is not None:
                end = start + kind.fit(value)
                if end == start:
                    continue
            elif kind.check is not None and not kind.check(value):
                continue
            if any(start < f.end and f.start < end for f in taken):
                continue
            taken.append(Finding(kind.name, 1.0, start, end, kind.token))
    return sorted(taken, key=lambda f: f.start)


PiiName = Literal["email", "phone", "card", "iban", "ssn", "nino", "ipv4", "ipv6"]
SecretName = Literal["private_key", "jwt", "openai", "aws", "github", "slack", "token"]


class PiiOptions(Strict):
    kinds: list[PiiName] = Field(default_factory=lambda: list(get_args(PiiName)), description="Which PII kinds "
                                 "to look for")


class SecretOptions(Strict):
    kinds: list[SecretName] = Field(default_factory=lambda: list(get_args(SecretName)),
                                    description="Which secret kinds to look for")


class PatternDetector:
    """Findings with spans and replacement tokens, for ``redact`` to put in place."""

    def __init__(self, name: str, kinds: Sequence[Kind]) -> None:
        self.name, self.kinds = name, list(kinds)

    def find(self, text: str) -> list[Finding]:
        return find(text, self.kinds)

    async def scan(self, texts: Sequence[str], ctx: GuardContext) -> list[list[Finding]]:
        return [self.find(t) for t in texts]


def _pii(opts: object) -> PatternDetector:
    assert isinstance(opts, PiiOptions)
    return PatternDetector("pii", [k for n, k in PII_KINDS.items() if n in opts.kinds])


def _secrets(opts: object) -> PatternDetector:
    assert isinstance(opts, SecretOptions)
    return PatternDetector("secrets", [k for n, k in SECRET_KINDS.items() if n in opts.kinds])


PII = GuardSpec(PiiOptions, _pii)
SECRETS = GuardSpec(SecretOptions, _secrets)
