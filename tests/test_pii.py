"""PII and secret detectors on the forms the PII benchmark found missed or wrongly flagged (issue 13).

Unit tier: ``find`` on short texts, each case with a look-alike that must stay unflagged.
"""

from __future__ import annotations

import pytest

from strata.guard.pii import PII_KINDS, SECRET_KINDS, find

ALL = [*PII_KINDS.values(), *SECRET_KINDS.values()]


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.detector, text[f.start:f.end]) for f in find(text, ALL)]


@pytest.mark.parametrize("text,expected", [
    # a SECRET_KEY setting, not only api_key/access_key
    ("secret_key: GvuZHc3FO8HNQTGfgtIoVpG8CSyUKF1MmbbEhh36",
     [("secret.token", "GvuZHc3FO8HNQTGfgtIoVpG8CSyUKF1MmbbEhh36")]),
    ("SECRET_KEY = 'x9$Lq!2mZ&rT7vB#0pWc'", [("secret.token", "x9$Lq!2mZ&rT7vB#0pWc")]),
    ("secret_name: prod/database/credentials_v2", []),
    # prose: no ':' or '='
    ("the access token is KpVWSy26mcqghP5cCNy5Bdmw71EA", [("secret.token", "KpVWSy26mcqghP5cCNy5Bdmw71EA")]),
    ("The token limit is 4096 tokens per request.", []),
    ("the token gpt-4o-mini is cheaper", []),
    ("Forgot password? Click the link.", []),
    # passwords with symbols or under 20 characters
    ("my password is Tr0ub4dor&3", [("secret.token", "Tr0ub4dor&3")]),
    ("DB_PASSWORD=hunter2", [("secret.token", "hunter2")]),
    ("the VPN password Sp1ngT3ch!Winter2024. Thanks", [("secret.token", "Sp1ngT3ch!Winter2024")]),
    ('{"password": "Summer2025&Beach"}', [("secret.token", "Summer2025&Beach")]),
    ("my password is hunter2", []),  # prose needs a mixed-case value: "is" is followed by words too
    ("Enter your password: ********", []),
    ("api_key: ${OPENAI_API_KEY}", []),
    ("password = os.environ['DB_PASSWORD']", []),
    ("token: <your-token-here-1>", []),
    # a keyword that is part of a longer name is not a keyword
    ("Set password_policy=strong_and_rotating_every_90_days in the config.", []),
    ("password_reset_required=true, max_tokens=4096", []),
])
def test_keyword_secrets(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize("text,expected", [
    # digit groups inside an IBAN (bad check digits) are not a phone or a card
    ("IBAN DE90 3704 0044 0532 0130 00 was rejected by the bank.", []),
    ("Refund to DE44 5001 0517 5407 3249 31 please", [("pii.iban", "DE44 5001 0517 5407 3249 31")]),
    ("Ring 0161 496 0752 or 020 7946 0958", [("pii.phone", "0161 496 0752"), ("pii.phone", "020 7946 0958")]),
    # Maestro 50 and 56-58
    ("card 5758 8874 4010 5867 ok", [("pii.card", "5758 8874 4010 5867")]),
    ("card 5000 0000 0000 0009 ok", [("pii.card", "5000 0000 0000 0009")]),
    ("card 5758 8874 4010 5868 (Luhn-invalid)", []),
    ("card 5958 8874 4010 5865 (no 59 prefix)", []),
    # file names with a scale suffix are not emails
    ("Export logo@2x.png, banner@3x.jpg and splash@1.5x.webp", []),
    ("write to design@2x-studio.com", [("pii.email", "design@2x-studio.com")]),
    # lowercase NINO and IBAN; mixed case is not a NINO
    ("ni number ce123456d", [("pii.nino", "ce123456d")]),
    ("ni number Ce123456D", []),
    ("pay into pt50000201231234567890154 today", [("pii.iban", "pt50000201231234567890154")]),
    ("iban de89 3704 0044 0532 0130 00 thanks", [("pii.iban", "de89 3704 0044 0532 0130 00")]),
    ("iban de89 3704 0044 0532 0130 01 thanks", []),
    ("Part AB12CDEF34567890 is out of stock", []),
])
def test_pii_forms(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected
