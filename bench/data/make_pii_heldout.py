"""Writes the held-out PII set from marked-up texts: [[kind|value]] marks a labelled span.

    python bench/data/make_pii_heldout.py > bench/data/pii_heldout.jsonl

Check digits (Luhn, IBAN mod-97) are computed here, independently of strata.guard.pii.
"""
# ruff: noqa: E501  (the texts are data)
import base64
import json
import random
import re
import string
import sys

rng = random.Random(2026_12_02)

def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        s = body + d
        tot = 0
        for i, ch in enumerate(reversed(s)):
            n = int(ch)
            if i % 2:
                n = n * 2 - 9 if n > 4 else n * 2
            tot += n
        if tot % 10 == 0:
            return s
    raise AssertionError

def luhn_bad(prefix, length):
    good = luhn_complete(prefix, length)
    return good[:-1] + str((int(good[-1]) + 3) % 10)

def group(s, sizes=None, sep=" "):
    if sizes is None:
        return sep.join(s[i:i + 4] for i in range(0, len(s), 4))
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    return sep.join(out)

LEN = {"DE": 22, "FR": 27, "ES": 24, "IT": 27, "NL": 18, "BE": 16, "AT": 20, "PL": 28, "SE": 24, "IE": 22, "GB": 22, "CH": 21, "NO": 15, "DK": 18, "FI": 18}

def iban(cc: str, bban: str | None = None, good: bool = True) -> str:
    n = LEN[cc] - 4
    if bban is None:
        bban = "".join(rng.choice(string.digits) for _ in range(n))
    assert len(bban) == n, (cc, len(bban), n)
    num = int("".join(str(int(c, 36)) for c in bban + cc + "00"))
    chk = 98 - num % 97
    if not good:
        chk = (chk + 7) % 97 or 11
    return f"{cc}{chk:02d}{bban}"

def spaced(s):
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))

def rnd(alpha, n):
    return "".join(rng.choice(alpha) for _ in range(n))

AN = string.ascii_letters + string.digits
UP = string.ascii_uppercase + string.digits

def jwt():
    h = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    p = base64.urlsafe_b64encode(json.dumps({"sub": str(rng.randint(1000, 99999)), "name": "Ola Nordmann", "iat": 1733100000}).encode()).rstrip(b"=").decode()
    return f"{h}.{p}.{rnd(AN + '-_', 43)}"

T = []
def add(cat, text):
    T.append((cat, text))

# --- email
add("email", "Invoice questions go to [[email|accounts.payable@northwind-example.com]], not to me.")
add("email", "reach me: [[email|KAI.SCHMIDT@EXAMPLE.DE]]")
add("email", "<a href=\"mailto:[[email|press@acme-example.org]]\">Press</a>")
add("email", "Users [[email|a.b@c.io]] and [[email|d_e@f.co]] both failed SSO.")
add("email", "The ticket was opened by [[email|ming.zhao+helpdesk@corp.example.com.au]] yesterday.")
add("email", "Please update my contact to [[email|o'brien@example.ie]]")
add("email", "log: user=[[email|svc-backup@infra.example.net]] action=login status=ok")
add("email", "'[[email|noreply@notifications.example.app]]' keeps landing in spam")
add("email_neg", "The retina assets are icon@2x.webp, banner@3x.jpg and splash@1.5x.png.")
add("email_neg", "Install it with npm i @types/node@20.11.5 and @vitejs/plugin-react@4.2.1")
add("email_neg", "Decorate the view with @login_required and @cache_page(60 * 15).")
add("email_neg", "Meeting @ 3pm in room 4.12, bring the slides.")
add("email_neg", "Docker image python@sha256:abc123 is pinned in the Dockerfile.")
add("email_neg", "Tag @devops.oncall in the #incidents channel.")

# --- phone
add("phone", "Our Berlin office: [[phone|+49 30 901820]] (switchboard).")
add("phone", "Call me on [[phone|(212) 555-0143]] after six.")
add("phone", "Support line [[phone|+1 (646) 555-0187]], Monday to Friday")
add("phone", "Tel. [[phone|+33 1 42 68 53 00]]")
add("phone", "mobile: [[phone|+44 7700 900461]]")
add("phone", "phone [[phone|646.555.0119]] or fax [[phone|646.555.0120]]")
add("phone", "Ring reception on [[phone|0161 496 0752]] to reschedule.")
add("phone", "My number changed to [[phone|07700 900982]].")
add("phone", "Emergency contact: [[phone|+61 2 9876 5432]]")
add("phone", "US: [[phone|1-888-555-0176]]")
add("phone", "text [[phone|5125550164]] when you arrive")
add("phone_neg", "Between 2019-2024 the ratio was 3.5-4.2 on average.")
add("phone_neg", "Tracking number 1Z 999 AA1 01 2345 6784 shows it in transit.")
add("phone_neg", "Build 10.0.22631.3296 fixed the driver issue.")
add("phone_neg", "Order #2024-1187-553 shipped on 12.03.2024.")
add("phone_neg", "The population grew from 1 204 556 to 1 318 002 in ten years.")
add("phone_neg", "Page views: 120 340 560 this quarter.")

# --- card
for pfx, ln, fmt, phrase in [("4", 16, None, "Charge my Visa [[card|{}]] please."),
                             ("5425", 16, None, "MasterCard: [[card|{}]], exp 09/27"),
                             ("2221", 16, "-", "card no. [[card|{}]]"),
                             ("3714", 15, "amex", "Amex [[card|{}]] cvv 1234"),
                             ("6011", 16, "", "discover {}: ".replace("{}", "card") + "[[card|{}]]"),
                             ("50", 16, None, "maestro [[card|{}]] declined at the till"),
                             ("56", 16, None, "Debit card [[card|{}]] was charged twice."),
                             ("58", 19, "", "The Maestro number is [[card|{}]]"),
                             ("6759", 16, None, "UK Maestro [[card|{}]]"),
                             ("4", 13, "", "old 13-digit visa [[card|{}]]"),
                             ("3528", 16, "-", "JCB [[card|{}]]")]:
    num = luhn_complete(pfx, ln)
    if fmt is None:
        s = group(num)
    elif fmt == "-":
        s = group(num, sep="-")
    elif fmt == "amex":
        s = group(num, [4, 6, 5])
    else:
        s = num
    add("card", phrase.format(s))
add("card_neg", f"Loyalty number {group(luhn_bad('4', 16))} (not a card).")
add("card_neg", f"Reference {luhn_bad('5412', 16)} in the subject line.")
add("card_neg", "test value 0000 0000 0000 0000 is rejected")
add("card_neg", "Timestamp 1733140800123 in milliseconds since the epoch.")
add("card_neg", f"Tracking {group(luhn_bad('57', 16))} is a parcel id.")
add("card_neg", "Serial 1234-5678-9012-3456-7890 on the back of the router.")

# --- iban
add("iban", f"Please pay to [[iban|{spaced(iban('DE'))}]] by the 5th.")
add("iban", f"IBAN: [[iban|{iban('FR')}]]")
add("iban", f"my iban is [[iban|{spaced(iban('ES')).lower()}]]")
add("iban", f"Transfer to [[iban|{iban('NL', 'ABNA' + rnd(string.digits, 10))}]] (ABN AMRO)")
add("iban", f"Konto: [[iban|{spaced(iban('AT'))}]]")
b = iban('BE').lower()
add("iban", f"iban [[iban|{b}]] — use it for refunds")
add("iban", f"Swedish account [[iban|{spaced(iban('SE'))}]]")
add("iban", f"[[iban|{iban('GB', 'NWBK' + rnd(string.digits, 14))}]] is the account for rent")
add("iban_neg", f"IBAN {spaced(iban('IT', 'X' + rnd(string.digits, 22), good=False))} bounced: wrong check digits.")
add("iban_neg", f"the account {spaced(iban('PL', good=False))} failed validation")
add("iban_neg", "Part number DE12 AB34 is out of stock.")
add("iban_neg", f"Wire to {spaced(iban('DK', good=False)).lower()} failed: check digits")

# --- ssn
add("ssn", "SSN: [[ssn|219-09-9999]]")
add("ssn", "her social security number is [[ssn|457-55-5462]]")
add("ssn", "applicant ssn=[[ssn|078-05-1121]]")
add("ssn", "SSN [[ssn|512 64 8831]] on the W-2")
add("ssn_neg", "Error code 404-12-2024 returned by the API.")
add("ssn_neg", "Invalid SSN 000-45-6789 was rejected (area 000).")
add("ssn_neg", "Call 666-12-3456? No, that is not a valid SSN either.")

# --- nino
add("nino", "National Insurance number: [[nino|QQ 12 34 56 A]]")
add("nino", "NI no [[nino|JG103759A]]")
add("nino", "my nino is [[nino|ab123456c]]")
add("nino", "ni: [[nino|pr 55 66 77 b]]")
add("nino_neg", "Product code GB123456A is discontinued.")
add("nino_neg", "The words 'in 12 34 56 a' appear in the lyrics.")

# --- ipv4 / ipv6
add("ipv4", "ssh deploy@[[ipv4|203.0.113.45]] -p 2222")
add("ipv4", "Blocked requests from [[ipv4|192.0.2.254]] and [[ipv4|198.51.100.7]].")
add("ipv4", "X-Forwarded-For: [[ipv4|100.64.12.9]]")
add("ipv4", "listen [[ipv4|0.0.0.0]]:8080")
add("ipv4_neg", "Requires Python >= 3.11.7.1? no, pip says 24.0.0.")
add("ipv4_neg", "Section 2.4.1.3 describes the retry policy.")
add("ipv4_neg", "Scored 999.1.2.3 on the weird scale.")
add("ipv6", "AAAA record points at [[ipv6|2001:db8:85a3::8a2e:370:7334]]")
add("ipv6", "client [[ipv6|fe80::1ff:fe23:4567:890a]] connected")
add("ipv6", "bind to [[ipv6|2001:0db8:0000:0000:0000:ff00:0042:8329]]")
add("ipv6_neg", "The match ended 3:2:1 on penalties after 12:30:00.")
add("ipv6_neg", "MAC 00:1a:2b:3c:4d:5e on eth0")

# --- prefixed secrets
add("openai", f"OPENAI_API_KEY=[[openai|sk-proj-{rnd(AN, 48)}]]")
add("openai", f"why does [[openai|sk-{rnd(AN, 48)}]] return 401?")
add("openai_neg", "Use sk-learn? No, it's called scikit-learn (sklearn).")
add("aws", f"aws_access_key_id = [[aws|AKIA{rnd(UP, 16)}]]")
add("aws", f"temporary creds [[aws|ASIA{rnd(UP, 16)}]] expire in an hour")
add("github", f"GH_TOKEN=[[github|ghp_{rnd(AN, 36)}]]")
add("github", f"token [[github|github_pat_{rnd(AN, 22)}_{rnd(AN, 59)}]] was leaked in CI")
add("slack", f"webhook auth [[slack|xoxb-{rnd(string.digits, 12)}-{rnd(string.digits, 13)}-{rnd(AN, 24)}]]")
add("jwt", f"Authorization header was [[jwt|{jwt()}]] when it failed")
add("private_key", "[[private_key|-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBm2L0yfpwZ3hF7Q3wC1hL2tZ8f0Y2lq3r8cJ0Kx9p1WQAAAJgq\n-----END OPENSSH PRIVATE KEY-----]]")
add("private_key_neg", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2\n-----END CERTIFICATE-----")

# --- keyword tokens / passwords
add("token", f"SECRET_KEY = '[[token|{rnd(AN + '!@#$%^&*(-_=+)', 50)}]]'")
add("token", f"client_secret: [[token|{rnd(AN, 32)}]]")
add("token", f"the api key is [[token|{rnd(AN, 32)}]]")
add("token", "password: [[token|Correct-Horse-9]]")
add("token", "My password is [[token|S3cure!Pass]] please reset it")
add("token", "DATABASE_PASSWORD=[[token|pa$$w0rd2024]]")
add("token", f"Authorization: Bearer [[token|{rnd(AN, 40)}]]")
add("token", "pwd=[[token|Qx7#mPz2]]")
add("token", f"here is my token {rnd(AN, 30)}".replace("token ", "token [[token|", 1) + "]]")
add("token", "\"password\": \"[[token|Summer2025&Beach]]\"")
add("token", f"Use access token [[token|{rnd(AN, 36)}]] for the staging API.")
add("token", f"STRIPE_SECRET=[[token|{rnd(AN, 28)}]]")
add("token_neg", "password_reset_required=true for all new accounts")
add("token_neg", "The token limit is 4096 tokens per request.")
add("token_neg", "Set secret_rotation_interval_days=30 in settings.")
add("token_neg", "Enter your password: ********")
add("token_neg", "api_key: ${OPENAI_API_KEY}")
add("token_neg", "password = os.environ['DB_PASSWORD']")
add("token_neg", "Forgot password? Click the reset link we sent.")
add("token_neg", "secret_name: prod/database/credentials_v2")

# --- benign / mixed
add("neg", "Summarise the Q3 report: revenue 4,512,334 EUR, up 12.5% from 4,010,200.")
add("neg", "UUID 3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b identifies the job.")
add("neg", "git commit 4e1243bd22c66e76c2ba9eddc1f91394e57f9f83 broke the build")
add("neg", "Translate 'good morning' into Portuguese and Italian.")
add("neg", "The meeting is on 2025-03-14 at 09:30, room B-204.")
add("neg", "ISBN 978-3-16-148410-0 is the second edition.")
add("neg", "Coordinates 52.5200, 13.4050 are central Berlin.")
add("neg", "Write a haiku about autumn leaves and a quiet lake.")
add("mixed", "Hi, I'm Dana ([[email|dana.r@example.com]], [[phone|+1 415 555 0199]]). My card [[card|" + group(luhn_complete("4", 16)) + "]] was charged twice.")
add("mixed", "Server [[ipv4|10.20.30.40]], user admin, password [[token|Adm1n!2024]] — please check the logs.")
add("mixed", f"New hire: NI [[nino|NP 12 34 56 D]], IBAN [[iban|{spaced(iban('GB', 'BARC' + rnd(string.digits, 14)))}]].")
add("mixed", f"export AWS_ACCESS_KEY_ID=[[aws|AKIA{rnd(UP, 16)}]]\nexport AWS_SECRET_ACCESS_KEY=[[token|{rnd(AN + '/+', 40)}]]")

MARK = re.compile(r"\[\[(\w+)\|(.*?)\]\]", re.S)
out = []
for i, (cat, marked) in enumerate(T):
    spans, text, pos = [], "", 0
    for m in MARK.finditer(marked):
        text += marked[pos:m.start()]
        start = len(text)
        text += m.group(2)
        spans.append({"start": start, "end": len(text), "kind": m.group(1), "value": m.group(2)})
        pos = m.end()
    text += marked[pos:]
    assert "[[" not in text, text
    out.append({"id": f"h{i:03d}", "category": cat, "text": text, "spans": spans})
sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
print(len(out), sum(len(r["spans"]) for r in out), sum(1 for r in out if not r["spans"]), file=sys.stderr)
