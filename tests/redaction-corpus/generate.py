#!/usr/bin/env python3
"""Writes corpus.jsonl: a labelled evaluation corpus for the portcullis-redact detector.

Each line is {"id": ..., "text": ..., "labels": [{"kind": ..., "value": ...}]}. A label's kind is
a builtin rule id of portcullis-redact, or a generic kind (`password`, `secret`) for a secret in a
form no rule claims to find; its value is an exact substring of the text. Records without labels
are hard negatives: identifiers, hashes, documentation examples and numbers that look like
secrets or personal data and are not.

Every value is synthetic: random characters in the provider's format (with the format's
checksum where it has one), phone numbers from ranges reserved for fiction, documentation
networks for IP addresses, example.* domains. Deterministic: a fixed seed, the standard
library only. The id is `<kind or neg>/<context>/<n>`; compare.py uses the context as the file
extension when it hands the records to other scanners.

    python3 tests/redaction-corpus/generate.py   # rewrites tests/redaction-corpus/corpus.jsonl
"""

import base64
import json
import os
import random
import string
import zlib

R = random.Random(20260512)
UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"
BASE62 = DIGITS + UPPER + LOWER


def rand(n, alphabet=ALNUM):
    """n random characters with at least one upper, lower and digit when the alphabet has them."""
    while True:
        s = "".join(R.choice(alphabet) for _ in range(n))
        kinds = [set(s) & set(k) for k in (UPPER, LOWER, DIGITS) if set(k) & set(alphabet)]
        if all(kinds) or n < 8:
            return s


def b64(nbytes):
    return base64.b64encode(R.randbytes(nbytes)).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# ---------------------------------------------------------------------------------------------
# Value generators, one per kind. Each returns the secret value (what a label names).


def github(prefix):
    body = rand(30)
    crc = zlib.crc32(body.encode())
    check = ""
    for _ in range(6):
        check = BASE62[crc % 62] + check
        crc //= 62
    return f"{prefix}_{body}{check}"


def luhn_complete(partial):
    digits = [int(d) for d in partial]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return partial + str((10 - total % 10) % 10)


def card():
    prefix, length = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    number = luhn_complete(prefix + "".join(R.choice(DIGITS) for _ in range(length - len(prefix) - 1)))
    style = R.choice(["plain", "space", "dash"])
    if style == "plain":
        return number
    sep = " " if style == "space" else "-"
    groups = [4, 6, 5] if length == 15 else [4, 4, 4, 4]
    out, i = [], 0
    for g in groups:
        out.append(number[i : i + g])
        i += g
    return sep.join(out)


def iban():
    country, bban = R.choice(
        [
            ("GB", R.choice(["WEST", "NWBK", "BARC"]) + "".join(R.choice(DIGITS) for _ in range(14))),
            ("DE", "".join(R.choice(DIGITS) for _ in range(18))),
            ("FR", "".join(R.choice(DIGITS) for _ in range(23))),
            ("NL", R.choice(["ABNA", "INGB", "RABO"]) + "".join(R.choice(DIGITS) for _ in range(10))),
        ]
    )
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    if R.random() < 0.5:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def ssn():
    while True:
        area = R.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"


def e164():
    return R.choice(
        [
            f"+1 415 555 {R.randint(100, 199):04d}",
            f"+14155550{R.randint(100, 199)}",
            f"+44 20 7946 {R.randint(0, 999):04d}",
            f"+44 7700 900{R.randint(0, 999):03d}",
            f"+49 30 {R.randint(100000, 999999)}",
            f"+33 1 {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)}",
        ]
    )


def nanp():
    area = R.choice([212, 312, 415, 617, 646, 206])
    n = R.randint(100, 199)
    return R.choice([f"({area}) 555-0{n % 100:02d}{n % 10}"[:14], f"{area}-555-01{n % 100:02d}", f"{area}.555.01{n % 100:02d}"])


def phone_uk():
    return R.choice(
        [
            f"020 7946 0{R.randint(0, 999):03d}",
            f"07700 900{R.randint(0, 999):03d}",
            f"0161 496 0{R.randint(0, 999):03d}",
            f"0113 496 0{R.randint(0, 999):03d}",
            f"+44 (0)20 7946 0{R.randint(0, 999):03d}",
            f"+44 (0)7700 900{R.randint(0, 999):03d}",
        ]
    )


def phone_fr():
    pairs = lambda: " ".join(f"{R.randint(0, 99):02d}" for _ in range(4))  # noqa: E731
    return R.choice(
        [
            f"0{R.randint(1, 5)} {pairs()}",
            f"06 {pairs()}",
            f"07.{pairs().replace(' ', '.')}",
            f"+33 (0)1 {pairs()}",
        ]
    )


def phone_de():
    return R.choice(
        [
            f"030 {R.randint(100000, 99999999)}",
            f"089 {R.randint(1000000, 9999999)}",
            f"0151 {R.randint(10000000, 99999999)}",
            f"040/{R.randint(100000, 9999999)}",
            f"+49 (0)30 {R.randint(100000, 9999999)}",
        ]
    )


def ipv4():
    return R.choice(
        [
            f"203.0.113.{R.randint(1, 254)}",
            f"198.51.100.{R.randint(1, 254)}",
            f"192.0.2.{R.randint(1, 254)}",
            f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        ]
    )


def ipv6():
    groups = [f"{R.randint(0, 0xFFFF):x}" for _ in range(4)]
    return R.choice(
        [f"2001:db8:{groups[0]}:{groups[1]}::{groups[2]}", f"2001:db8:{':'.join(groups)}:0:{groups[0]}", f"fe80::{':'.join(groups)}"]
    )


FIRST = ["jane", "bob", "amelie", "lukas", "priya", "tomasz", "mei", "oliver", "fatima", "noah"]
LAST = ["doe", "martin", "schmidt", "kowalski", "nguyen", "okafor", "rossi", "smith", "garcia"]


def email():
    user = f"{R.choice(FIRST)}{R.choice(['.', '_', ''])}{R.choice(LAST)}"
    if R.random() < 0.3:
        user += f"+{R.choice(['billing', 'test', 'news'])}"
    return f"{user}@{R.choice(['example.com', 'example.org', 'mail.example.net', 'corp.example.co.uk'])}"


def jwt():
    header = {"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {"sub": f"user-{R.randint(1000, 9999)}", "iat": 1760000000 + R.randint(0, 10**6), "scope": "read write"}
    parts = [b64url(json.dumps(p, separators=(",", ":")).encode()) for p in (header, payload)]
    return ".".join(parts + [b64url(R.randbytes(32))])


def pem(kind):
    body = base64.b64encode(R.randbytes(R.choice([180, 300, 600]))).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    label = f"{kind} PRIVATE KEY" if kind else "PRIVATE KEY"
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def openssh():
    body = base64.b64encode(b"openssh-key-v1\x00\x00\x00\x00\x04none" + R.randbytes(300)).decode()
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return "\n".join(["-----BEGIN OPENSSH PRIVATE KEY-----", *lines, "-----END OPENSSH PRIVATE KEY-----"])


def truncated_pem():
    block = pem(R.choice(["RSA", "", "EC"])).split("\n")
    return "\n".join(block[: R.randint(2, 4)])


def pgp():
    body = base64.b64encode(R.randbytes(240)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN PGP PRIVATE KEY BLOCK-----", "", *lines, "=" + rand(4), "-----END PGP PRIVATE KEY BLOCK-----"])


def password_value(n=None):
    return rand(n or R.randint(14, 24), ALNUM + "!#%^*_-")


def aws_secret():
    while True:
        s = rand(40, B64)
        if "/" in s or "+" in s or R.random() < 0.3:
            return s


GENERATORS = {
    "github-pat": lambda: github("ghp"),
    "github-oauth": lambda: github("gho"),
    "github-user-to-server": lambda: github("ghu"),
    "github-server-to-server": lambda: github("ghs"),
    "github-refresh": lambda: github("ghr"),
    "github-fine-grained-pat": lambda: f"github_pat_{rand(22)}_{rand(59)}",
    "gitlab-pat": lambda: f"glpat-{rand(20, URLSAFE)}",
    "gitlab-token": lambda: f"{R.choice(['gldt', 'glft', 'glcbt'])}-{rand(20, URLSAFE)}",
    "gitlab-pipeline-trigger-token": lambda: f"glptt-{rand(40, HEX)}",
    "gitlab-runner-token": lambda: f"glrt-{rand(20, URLSAFE)}",
    "aws-access-key-id": lambda: R.choice(["AKIA", "ASIA"]) + rand(16, UPPER + "234567"),
    "aws-secret-access-key": aws_secret,
    "google-api-key": lambda: f"AIza{rand(35, URLSAFE)}",
    "google-oauth-client-secret": lambda: f"GOCSPX-{rand(28, URLSAFE)}",
    "azure-storage-key": lambda: b64(64),
    "azure-shared-access-key": lambda: b64(32),
    "slack-token": lambda: f"{R.choice(['xoxb', 'xoxp'])}-{R.randint(10**9, 10**10)}-{R.randint(10**12, 10**13)}-{rand(24)}",
    "slack-webhook": lambda: f"https://hooks.slack.com/services/T{rand(8, UPPER + DIGITS)}/B{rand(10, UPPER + DIGITS)}/{rand(24)}",
    "stripe-secret-key": lambda: f"sk_{R.choice(['live', 'test'])}_{rand(R.choice([24, 99]))}",
    "stripe-restricted-key": lambda: f"rk_live_{rand(24)}",
    "stripe-webhook-secret": lambda: f"whsec_{rand(32)}",
    "twilio-api-key": lambda: f"SK{rand(32, HEX)}",
    "twilio-auth-token": lambda: rand(32, HEX),
    "sendgrid-api-key": lambda: f"SG.{rand(22, URLSAFE)}.{rand(43, URLSAFE)}",
    "mailgun-api-key": lambda: f"key-{rand(32, HEX)}",
    "mailgun-signing-key": lambda: f"{rand(32, HEX)}-{rand(8, HEX)}-{rand(8, HEX)}",
    "shopify-token": lambda: f"{R.choice(['shpat', 'shpss', 'shpca'])}_{rand(32, HEX)}",
    "npm-token": lambda: f"npm_{rand(36)}",
    "pypi-token": lambda: f"pypi-AgEIcHlwaS5vcmc{rand(R.randint(60, 140), URLSAFE)}",
    "datadog-api-key": lambda: rand(32, HEX),
    "openai-api-key": lambda: f"sk-{R.choice(['proj', 'svcacct', 'admin'])}-{rand(R.choice([48, 74, 120]), URLSAFE)}",
    "openai-legacy-key": lambda: f"sk-{rand(20)}T3BlbkFJ{rand(20)}",
    "anthropic-api-key": lambda: f"sk-ant-{R.choice(['api03', 'admin01'])}-{rand(93, URLSAFE)}AA",
    "huggingface-token": lambda: f"hf_{rand(34, UPPER + LOWER)}",
    "digitalocean-token": lambda: f"dop_v1_{rand(64, HEX)}",
    "docker-hub-pat": lambda: f"dckr_pat_{rand(27, URLSAFE)}",
    "linear-api-key": lambda: f"lin_api_{rand(40)}",
    "postman-api-key": lambda: f"PMAK-{rand(24, HEX)}-{rand(34, HEX)}",
    "grafana-service-account-token": lambda: f"glsa_{rand(32)}_{rand(8, HEX)}",
    "databricks-token": lambda: f"dapi{rand(32, HEX)}",
    "vault-service-token": lambda: f"hvs.{rand(R.randint(90, 110), URLSAFE)}",
    "age-secret-key": lambda: "AGE-SECRET-KEY-1" + "".join(R.choice("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L") for _ in range(58)),
    "pulumi-access-token": lambda: f"pul-{rand(40, HEX)}",
    "newrelic-user-api-key": lambda: f"NRAK-{rand(27, UPPER + DIGITS)}",
    "sentry-org-token": lambda: "sntrys_"
    + b64url(json.dumps({"iat": 1760000000.0, "url": "https://sentry.io", "region_url": "https://us.sentry.io", "org": "acme"}, separators=(",", ":")).encode())
    + "_"
    + rand(43, ALNUM + "+/"),
    "square-access-token": lambda: f"sq0atp-{rand(22, URLSAFE)}",
    "telegram-bot-token": lambda: f"{R.randint(10**8, 10**10 - 1)}:AA{rand(33, URLSAFE)}",
    "jwt": jwt,
    "private-key": lambda: pem(R.choice(["RSA", "", "EC", "ENCRYPTED"])),
    "openssh-private-key": openssh,
    "private-key-truncated": truncated_pem,
    "pgp-private-key": pgp,
    "generic-secret-assignment": lambda: password_value(),
    "email": email,
    "payment-card": card,
    "iban": iban,
    "us-ssn": ssn,
    "phone-e164": e164,
    "phone-nanp": nanp,
    "phone-uk": phone_uk,
    "phone-fr": phone_fr,
    "phone-de": phone_de,
    "ipv4": ipv4,
    "ipv6": ipv6,
}

# The variable name a kind is usually stored under.
ENV_NAME = {
    "github": "GITHUB_TOKEN",
    "gitlab": "GITLAB_TOKEN",
    "aws-access-key-id": "AWS_ACCESS_KEY_ID",
    "google-api-key": "GOOGLE_API_KEY",
    "google-oauth-client-secret": "GOOGLE_CLIENT_SECRET",
    "slack-token": "SLACK_BOT_TOKEN",
    "slack-webhook": "SLACK_WEBHOOK_URL",
    "stripe": "STRIPE_KEY",
    "twilio-api-key": "TWILIO_API_KEY",
    "sendgrid-api-key": "SENDGRID_API_KEY",
    "mailgun-api-key": "MAILGUN_KEY",
    "shopify-token": "SHOPIFY_ACCESS_TOKEN",
    "npm-token": "NPM_TOKEN",
    "pypi-token": "PYPI_TOKEN",
    "openai": "OPENAI_API_KEY",
    "anthropic-api-key": "ANTHROPIC_API_KEY",
    "huggingface-token": "HF_TOKEN",
    "digitalocean-token": "DIGITALOCEAN_TOKEN",
    "docker-hub-pat": "DOCKERHUB_TOKEN",
    "linear-api-key": "LINEAR_API_KEY",
    "postman-api-key": "POSTMAN_API_KEY",
    "grafana-service-account-token": "GRAFANA_TOKEN",
    "databricks-token": "DATABRICKS_TOKEN",
    "vault-service-token": "VAULT_TOKEN",
    "age-secret-key": "SOPS_AGE_KEY",
    "pulumi-access-token": "PULUMI_ACCESS_TOKEN",
    "newrelic-user-api-key": "NEW_RELIC_API_KEY",
    "sentry-org-token": "SENTRY_AUTH_TOKEN",
    "square-access-token": "SQUARE_ACCESS_TOKEN",
    "telegram-bot-token": "TELEGRAM_BOT_TOKEN",
    "jwt": "ACCESS_TOKEN",
}


def env_name(kind):
    for prefix, name in ENV_NAME.items():
        if kind.startswith(prefix):
            return name
    return kind.upper().replace("-", "_")


def camel(name):
    head, *rest = name.lower().split("_")
    return head + "".join(p.title() for p in rest)


# ---------------------------------------------------------------------------------------------
# Contexts for a single-line token: (context, template). `{n}` is the variable name, `{v}` the
# value, `{c}` its camelCase name.

TOKEN_CONTEXTS = [
    ("env", "{n}={v}\n"),
    ("env", "# production\nexport {n}=\"{v}\"\nexport LOG_LEVEL=info\n"),
    ("yaml", "service:\n  name: billing\n  credentials:\n    {c}: {v}\n  retries: 3\n"),
    ("json", '{{"status": "ok", "config": {{"{c}": "{v}", "region": "eu-west-1"}}}}'),
    ("log", "2026-05-12T08:15:{s:02d}Z WARN startup: using token {v} from environment\n"),
    ("log", "level=debug msg=\"request\" method=GET path=/v1/items auth=\"{v}\" duration_ms=42\n"),
    ("py", "import os\n\nclient = Client(\n    api_key=\"{v}\",\n    timeout=30,\n)\n"),
    ("js", "const client = new Client({{ token: '{v}', retries: 2 }});\nmodule.exports = client;\n"),
    ("sh", "curl -s -H \"Authorization: Bearer {v}\" https://api.example.com/v1/me\n"),
    ("eml", "Hi team,\n\nthe new key for the staging integration is {v} - please rotate the old one by Friday.\n\nThanks\n"),
    ("md", "## Setup\n\nSet `{n}` in your shell:\n\n```\n{n}={v}\n```\n"),
]

# Kinds whose value only counts next to a key name; their contexts always carry one.
NAMED_ONLY = {
    "twilio-auth-token": [
        ("env", "TWILIO_AUTH_TOKEN={v}\n"),
        ("yaml", "twilio:\n  twilio_auth_token: \"{v}\"\n"),
        ("json", '{{"TWILIO_AUTH_TOKEN": "{v}"}}'),
    ],
    "datadog-api-key": [
        ("env", "DD_API_KEY={v}\nDD_SITE=datadoghq.eu\n"),
        ("yaml", "datadog:\n  datadog_api_key: {v}\n"),
        ("json", '{{"dd-api-key": "{v}", "service": "web"}}'),
        ("sh", "docker run -e DD_API_KEY={v} -e DD_ENV=prod agent:7\n"),
    ],
    "mailgun-signing-key": [
        ("env", "MAILGUN_API_KEY={v}\n"),
        ("yaml", "mailgun_webhook_signing_key: \"{v}\"\n"),
        ("py", "MAILGUN_SECRET = \"{v}\"\n"),
    ],
    "aws-secret-access-key": [
        ("ini", "[default]\nregion = eu-central-1\naws_secret_access_key = {v}\n"),
        ("json", '{{"Credentials": {{"SecretAccessKey": "{v}", "Expiration": "2026-05-12T09:00:00Z"}}}}'),
        ("env", "AWS_SECRET_ACCESS_KEY={v}\n"),
        ("py", "session = boto3.Session(aws_secret_access_key=\"{v}\")\n"),
    ],
    "azure-storage-key": [
        ("env", "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName=acmedata;AccountKey={v};EndpointSuffix=core.windows.net\n"),
        ("json", '{{"ConnectionStrings": {{"Blob": "DefaultEndpointsProtocol=https;AccountName=acmelogs;AccountKey={v};EndpointSuffix=core.windows.net"}}}}'),
    ],
    "azure-shared-access-key": [
        ("env", "SERVICEBUS=Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={v}\n"),
        ("json", '{{"eventHub": "Endpoint=sb://acme-events.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={v};EntityPath=orders"}}'),
    ],
}

PII_CONTEXTS = [
    ("json", '{{"id": {i}, "name": "Jane Roe", "{f}": "{v}", "plan": "pro"}}'),
    ("csv", "id,name,{f},created\n{i},Alex Stone,{v},2026-04-01\n"),
    ("eml", "Hello,\n\nplease update my {f} to {v} for future orders.\n\nKind regards,\nSam\n"),
    ("log", "2026-05-12 10:{s:02d}:03,117 INFO crm: updated customer {i} {f}={v}\n"),
    ("txt", "Ticket #{i}: customer called, {f} on file is {v}; asked for a callback tomorrow.\n"),
]

PII_FIELD = {
    "email": "email",
    "payment-card": "card",
    "iban": "iban",
    "us-ssn": "ssn",
    "phone-e164": "phone",
    "phone-nanp": "phone",
    "phone-uk": "phone",
    "phone-fr": "telephone",
    "phone-de": "telefon",
    "ipv4": "client_ip",
    "ipv6": "client_ip",
}

PEM_CONTEXTS = [
    ("pem", "{v}\n"),
    ("yaml", "tls:\n  key: |\n{indented}\n"),
    ("json", '{{"type": "service_account", "project_id": "acme-prod", "private_key": "{escaped}\\n", "client_email": "svc@acme-prod.iam.example.com"}}'),
    ("log", "2026-05-12T08:15:00Z ERROR loader: cannot parse key material: {v}\n"),
]


def records():
    out = []
    counter = {}

    def add(kind, context, text, labels):
        n = counter.get((kind, context), 0)
        counter[(kind, context)] = n + 1
        for label in labels:
            assert label["value"] in text, (kind, context, label)
        out.append({"id": f"{kind}/{context}/{n}", "text": text, "labels": labels})

    pem_kinds = {"private-key", "openssh-private-key", "private-key-truncated", "pgp-private-key"}
    special = {"url-password", "connection-string-password", "aws-secret-access-key-pair", "twilio-account-credentials"}
    for kind, generate in GENERATORS.items():
        if kind in PII_FIELD:
            for rep in range(3):
                for context, template in PII_CONTEXTS:
                    v = generate()
                    text = template.format(f=PII_FIELD[kind], v=v, i=R.randint(1000, 99999), s=R.randint(0, 59))
                    add(kind, context, text, [{"kind": kind, "value": v}])
        elif kind in pem_kinds:
            for rep in range(3):
                for context, template in PEM_CONTEXTS:
                    v = generate()
                    escaped = v.replace("\n", "\\n")
                    indented = "\n".join("    " + line for line in v.split("\n"))
                    text = template.format(v=v, escaped=escaped, indented=indented)
                    value = escaped if context == "json" else v
                    if context == "yaml":
                        # Indentation is inside the block; the label is the block as it appears.
                        value = indented.lstrip()
                    labels = [{"kind": kind, "value": value}]
                    if "client_email" in text:
                        labels.append({"kind": "email", "value": "svc@acme-prod.iam.example.com"})
                    add(kind, context, text, labels)
        elif kind in NAMED_ONLY:
            for rep in range(3):
                for context, template in NAMED_ONLY[kind]:
                    v = generate()
                    add(kind, context, template.format(v=v), [{"kind": kind, "value": v}])
        elif kind == "generic-secret-assignment":
            names = ["password", "db_password", "client_secret", "api_key", "apiKey", "auth_token", "SECRET_KEY", "secret"]
            templates = [
                ("env", "{n}={v}\n"),
                ("yaml", "database:\n  host: db.internal\n  {n}: \"{v}\"\n"),
                ("json", '{{"user": "svc-report", "{n}": "{v}"}}'),
                ("py", "{n} = '{v}'\n"),
                ("ini", "[server]\nport = 8443\n{n} = {v}\n"),
            ]
            for rep in range(3):
                for context, template in templates:
                    v = generate()
                    add(kind, context, template.format(n=R.choice(names), v=v), [{"kind": kind, "value": v}])
        else:
            for context, template in TOKEN_CONTEXTS:
                v = generate()
                name = env_name(kind)
                text = template.format(n=name, c=camel(name), v=v, s=R.randint(0, 59))
                add(kind, context, text, [{"kind": kind, "value": v}])
    assert not special & set(GENERATORS)
    pairs_and_passwords(add)
    mixed(add)
    negatives(add)
    generic_misses(add)
    return out


def pairs_and_passwords(add):
    """Secrets that only exist in combination: key pairs, passwords in URLs and strings."""
    for i in range(6):
        key_id = GENERATORS["aws-access-key-id"]()
        secret = aws_secret()
        user = R.choice(["deploy", "ci-bot", "backup"])
        add("aws-secret-access-key-pair", "csv", f"User name,Access key ID,Secret access key\n{user},{key_id},{secret}\n",
            [{"kind": "aws-access-key-id", "value": key_id}, {"kind": "aws-secret-access-key-pair", "value": secret}])
        add("aws-secret-access-key-pair", "sh", f"aws configure set aws_access_key_id {key_id}\naws configure set secret {secret}\n",
            [{"kind": "aws-access-key-id", "value": key_id}, {"kind": "aws-secret-access-key-pair", "value": secret}])
        sid, token = "AC" + rand(32, HEX), rand(32, HEX)
        add("twilio-account-credentials", "sh", f"curl -X POST https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json -u {sid}:{token}\n",
            [{"kind": "twilio-account-credentials", "value": token}])
        add("twilio-account-credentials", "py", f"account_sid = \"{sid}\"\nauth_token = \"{token}\"\nclient = Client(account_sid, auth_token)\n",
            [{"kind": "twilio-account-credentials", "value": token}])
    schemes = [("postgres", 5432), ("postgresql", 5432), ("mysql", 3306), ("mongodb+srv", None), ("redis", 6379), ("amqp", 5672), ("https", None)]
    for i in range(24):
        scheme, port = schemes[i % len(schemes)]
        pw = password_value(R.randint(10, 20)).replace("#", "x")
        host = R.choice(["db.internal", "cache.prod.example.net", "mq.example.com", "git.example.com"])
        url = f"{scheme}://{R.choice(['app', 'admin', 'svc_report', 'deploy'])}:{pw}@{host}" + (f":{port}" if port else "") + "/main"
        context, template = R.choice(
            [
                ("env", "DATABASE_URL={u}\n"),
                ("yaml", "spring:\n  datasource:\n    url: {u}\n"),
                ("log", "2026-05-12 08:15:00 ERROR pool: connection to {u} refused\n"),
                ("py", "engine = create_engine(\"{u}\")\n"),
            ]
        )
        add("url-password", context, template.format(u=url), [{"kind": "url-password", "value": pw}])
    for i in range(12):
        pw = password_value(R.randint(10, 18)).replace(";", "x")
        text = R.choice(
            [
                "Server=tcp:acme-sql.database.windows.net,1433;Initial Catalog=orders;User ID=app;Password={p};Encrypt=True;",
                "Data Source=sql01;Initial Catalog=crm;User Id=report;Password={p};",
                "Host=pg.internal;Port=5432;Database=app;Username=app;Pwd={p}",
            ]
        ).format(p=pw)
        context = R.choice(["json", "ini", "env"])
        if context == "json":
            text = json.dumps({"ConnectionStrings": {"Default": text}})
        elif context == "env":
            text = f"DB_CONNECTION=\"{text}\"\n"
        else:
            text = f"[database]\nconnection = {text}\n"
        add("connection-string-password", context, text, [{"kind": "connection-string-password", "value": pw}])


def phone_kind_of(number):
    if number.startswith("+44 (0)") or number.startswith("0"):
        return "phone-uk"
    return "phone-e164" if number.startswith("+") else "phone-nanp"


def mixed(add):
    """Records carrying several labelled values of different kinds."""
    for i in range(40):
        kinds = R.sample(
            ["github-pat", "slack-token", "stripe-secret-key", "sendgrid-api-key", "npm-token", "openai-api-key", "google-api-key", "gitlab-pat", "anthropic-api-key", "jwt"], 3
        )
        values = [(k, GENERATORS[k]()) for k in kinds]
        lines = [f"{env_name(k)}={v}" for k, v in values]
        phone_kind = R.choice(["phone-uk", "phone-nanp", "phone-de", "phone-fr"])
        mail, phone = email(), GENERATORS[phone_kind]()
        text = "# owner: {}\n# on call: {}\n{}\nLOG_LEVEL=info\n".format(mail, phone, "\n".join(lines))
        labels = [{"kind": k, "value": v} for k, v in values] + [{"kind": "email", "value": mail}]
        labels.append({"kind": phone_kind, "value": phone})
        add("mixed", "env", text, labels)
    for i in range(30):
        customer = {
            "id": f"cus_{rand(14)}",
            "name": f"{R.choice(FIRST).title()} {R.choice(LAST).title()}",
            "email": email(),
            "phone": R.choice([e164, nanp, phone_uk])(),
            "address": {"city": R.choice(["London", "Berlin", "Lyon", "Austin"]), "postcode": R.choice(["SW1A 1AA", "10115", "69001", "78701"])},
            "last_login_ip": ipv4(),
            "orders": R.randint(0, 40),
        }
        labels = [
            {"kind": "email", "value": customer["email"]},
            {"kind": phone_kind_of(customer["phone"]), "value": customer["phone"]},
            {"kind": "ipv4", "value": customer["last_login_ip"]},
        ]
        if R.random() < 0.5:
            customer["payment"] = {"card": card(), "exp": f"{R.randint(1, 12):02d}/{R.randint(27, 31)}"}
            labels.append({"kind": "payment-card", "value": customer["payment"]["card"]})
        add("mixed", "json", json.dumps(customer, indent=R.choice([None, 2])), labels)
    for i in range(20):
        ip, token, mail = ipv4(), jwt(), email()
        text = f'{ip} - - [12/May/2026:08:15:{i:02d} +0000] "GET /api/v2/orders?page=2 HTTP/1.1" 200 5123 "-" "curl/8.5.0" user={mail} auth="Bearer {token}"\n'
        add("mixed", "log", text, [{"kind": "ipv4", "value": ip}, {"kind": "jwt", "value": token}, {"kind": "email", "value": mail}])


def negatives(add):
    """Hard negatives: nothing in them is a secret or personal data."""
    def uuid():
        h = rand(32, HEX)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def sha(n=40):
        return rand(n, HEX)

    def bad_card():
        number = luhn_complete("4" + "".join(R.choice(DIGITS) for _ in range(14)))
        wrong = number[:-1] + str((int(number[-1]) + R.randint(1, 9)) % 10)
        return " ".join(wrong[i : i + 4] for i in range(0, 16, 4))

    makers = [
        ("json", lambda: json.dumps({"id": uuid(), "request_id": uuid(), "status": "queued", "retry": R.randint(0, 3)})),
        ("log", lambda: f"2026-05-12T08:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}.{R.randint(0, 999):03d}Z INFO job {uuid()} finished in {R.randint(1, 900)} ms\n"),
        ("txt", lambda: f"commit {sha()}\nAuthor: CI <ci@localhost>\nDate:   Tue May 12 08:15:00 2026 +0000\n\n    bump version to {R.randint(1, 9)}.{R.randint(0, 30)}.{R.randint(0, 99)}\n"),
        ("txt", lambda: f"{sha(64)}  portcullis-{R.randint(0, 3)}.{R.randint(0, 20)}.{R.randint(0, 9)}-x86_64-unknown-linux-gnu.tar.gz\n"),
        ("yaml", lambda: f"image: registry.example.com/web@sha256:{sha(64)}\nreplicas: {R.randint(1, 9)}\n"),
        ("json", lambda: json.dumps({"etag": sha(32), "size": R.randint(100, 10**7), "last_modified": "2026-05-12T08:15:00Z"})),
        ("json", lambda: json.dumps({"resolved": "https://registry.example.org/left-pad/-/left-pad-1.3.0.tgz", "integrity": "sha512-" + b64(64)})),
        ("md", lambda: "Example credentials from the AWS documentation:\n\n    aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"),
        ("env", lambda: R.choice(["GITHUB_TOKEN=${{ secrets.GITHUB_TOKEN }}\n", "OPENAI_API_KEY=<your-api-key>\n", "DB_PASSWORD=changeme\n", "STRIPE_KEY=sk_live_xxxxxxxxxxxxxxxxxxxxxxxx\n", "password: ********\n", "API_KEY=${API_KEY}\n"])),
        ("txt", lambda: f"Card {bad_card()} was declined (invalid number).\n"),
        ("txt", lambda: f"Order {R.randint(10**15, 10**16 - 1)} shipped; tracking {R.randint(10**11, 10**12 - 1)}.\n"),
        ("txt", lambda: f"Upgraded from v{R.randint(1, 9)}.{R.randint(0, 20)}.{R.randint(0, 20)} to {R.randint(1, 9)}.{R.randint(0, 20)}.{R.randint(0, 20)}.{R.randint(1000, 30000)} (build {R.randint(20260101, 20261231)}.{R.randint(1, 9)}).\n"),
        ("log", lambda: f"2026-05-12 {R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d},{R.randint(0, 999):03d} DEBUG cache hit ratio {R.random():.4f} over {R.randint(1, 10**6)} lookups\n"),
        ("txt", lambda: f"The meeting moved from {R.randint(8, 11)}:00 to {R.randint(12, 17)}:30 on {R.randint(1, 28):02d}.{R.randint(1, 12):02d}.2026; room {R.randint(100, 999)}, budget {R.randint(1, 99)} {R.randint(100, 999)} EUR.\n"),
        ("txt", lambda: f"Population {R.randint(1, 9)} {R.randint(100, 999)} {R.randint(100, 999)}; area {R.randint(100, 999)}.{R.randint(0, 9)} km2; founded {R.randint(1100, 1900)}.\n"),
        ("txt", lambda: f"ISBN 978-{R.randint(0, 9)}-{R.randint(100, 999)}-{R.randint(10000, 99999)}-{R.randint(0, 9)}; order 0{R.randint(100, 999)} {R.randint(100000, 999999)}.\n"),
        ("txt", lambda: f"Opening hours 0{R.randint(7, 9)}00 - {R.randint(16, 19)}00, Monday to Friday.\n"),
        ("pub", lambda: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{b64(32)[:43]} deploy@ci\n"),
        ("pem", lambda: "-----BEGIN PUBLIC KEY-----\n" + "\n".join(b64(48)[:64] for _ in range(3)) + "\n-----END PUBLIC KEY-----\n"),
        ("pem", lambda: "-----BEGIN CERTIFICATE-----\n" + "\n".join(b64(48)[:64] for _ in range(4)) + "\n-----END CERTIFICATE-----\n"),
        ("js", lambda: f"const stripe = Stripe('pk_live_{rand(24)}');\n"),
        ("json", lambda: json.dumps({"account_sid": "AC" + rand(32, HEX), "status": "active", "type": "Full"})),
        ("json", lambda: json.dumps({"token_type": "Bearer", "expires_in": 3600, "scope": "repo read:org"})),
        ("css", lambda: f".btn {{ color: #{rand(6, HEX)}; background: #{rand(6, HEX)}; margin: 0 {R.randint(1, 9)}px; }}\n"),
        ("log", lambda: f"pod web-{rand(10, HEX)}-{rand(5, LOWER + DIGITS)} restarted {R.randint(1, 5)} times\n"),
        ("txt", lambda: f"Invoice total: {R.randint(1, 9)},{R.randint(100, 999)}.{R.randint(10, 99)} USD, due {R.randint(1, 12)}/{R.randint(1, 28)}/2026.\n"),
        ("json", lambda: json.dumps({"version": f"{R.randint(1, 20)}.{R.randint(0, 9)}.{R.randint(0, 9)}.{R.randint(0, 9)}", "os": f"10.0.{R.randint(10000, 22000)}.{R.randint(1, 999)}"})),
        ("txt", lambda: f"Run took {R.randint(0, 59)}m{R.randint(0, 59)}s; {R.randint(1, 999)} passed, 0 failed, seed 0x{rand(16, HEX)}.\n"),
        ("md", lambda: "Get a token from the settings page, it starts with `ghp_` and looks like `ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX`.\n"),
        ("txt", lambda: f"The quick brown fox jumps over the lazy dog {R.randint(2, 99)} times; see section {R.randint(1, 9)}.{R.randint(1, 9)}.{R.randint(1, 9)}.\n"),
        ("json", lambda: json.dumps({"password_policy": {"min_length": 12, "require_symbols": True}, "secret_rotation_days": 90})),
        ("yaml", lambda: f"env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n        name: db-credentials\n        key: password\n"),
        ("json", lambda: json.dumps({"next_page_token": R.choice(["", "2"]), "items": [], "total": 0})),
        ("log", lambda: f"GET /static/app.{rand(8, HEX)}.js 200 {R.randint(100, 99999)}B\n"),
        ("txt", lambda: f"Kubernetes v1.{R.randint(20, 33)}.{R.randint(0, 9)}, containerd 1.{R.randint(5, 7)}.{R.randint(0, 30)}, kernel 6.{R.randint(1, 12)}.{R.randint(0, 99)}-{R.randint(1, 50)}-generic\n"),
    ]
    for rep in range(9):
        for context, make in makers:
            add("neg", context, make(), [])


def generic_misses(add):
    """Secrets no builtin rule claims to find: low-entropy passwords in prose, bare AWS secret
    keys without a name or a key id. Labelled with generic kinds and reported separately."""
    for i in range(6):
        pw = R.choice(["Summer2026!", "hunter2", "Welcome123", "Passw0rd!"])
        add("password", "eml", f"Hi Sam,\n\nthe wifi password for the office is {pw} - don't share it.\n", [{"kind": "password", "value": pw}])
        secret = aws_secret()
        add("secret", "txt", f"here you go: {secret}\n", [{"kind": "secret", "value": secret}])
        user, pw = R.choice(["admin", "deploy", "jane"]), password_value(12)
        basic = base64.b64encode(f"{user}:{pw}".encode()).decode()
        add("http-basic-auth", "log", f"DEBUG http: > GET /v1/status\nDEBUG http: > Authorization: Basic {basic}\n", [{"kind": "http-basic-auth", "value": basic}])
        add("password", "sh", f"mysql -h db.internal -u {user} -p{pw} orders < dump.sql\n", [{"kind": "password", "value": pw}])
        add("password", "txt", f"db.internal:5432:orders:{user}:{pw}\n", [{"kind": "password", "value": pw}])
        encoded = base64.b64encode(pw.encode()).decode()
        add("generic-secret-assignment", "yaml", f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: {encoded}\n", [{"kind": "generic-secret-assignment", "value": encoded}])
        token = github("ghs")
        add("url-password", "sh", f"git clone https://x-access-token:{token}@github.com/acme/infra.git\n", [{"kind": "github-server-to-server", "value": token}])


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.jsonl")
    rows = records()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} records to {path}")


if __name__ == "__main__":
    main()
