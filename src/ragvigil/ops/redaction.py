"""Scrub personal data and secrets from log records before any handler writes them.

Logs outlive the requests they describe and are read by more people than the data they mention,
so phone numbers, e-mails, PRC ID numbers, card numbers and credentials are replaced by labels
(``[PHONE]``, ``[EMAIL]``, ``[CN_ID]``, ``[CARD]``, ``[SECRET]``) on the way in.

Wiring (handler-level, because a logger's own filters do not see records propagated from children)::

    from ragvigil.ops.redaction import RedactingFilter, Redactor

    redacting = RedactingFilter(Redactor())
    for handler in handlers:
        handler.addFilter(redacting)

Customise with ``Redactor([*default_rules(), Rule("ticket", re.compile(r"TCK-\\d+"), "[TICKET]")])``
or drop a rule by name: ``Redactor(r for r in default_rules() if r.name != "us_phone")``.

Design choices:

* Boundaries are "not an ASCII letter or digit" instead of ``\\b``: Chinese characters count as word
  characters, so ``手机号是13812345678`` has no ``\\b`` before the number; the ASCII guard also stops
  a rule from biting the middle of an id or hash.
* Each pattern can only start where a token starts (a look-behind guard), so a 200 kB base64 blob or
  identifier costs one linear scan, not a quadratic one; keep that property when adding rules.
* Numbers that look like IDs or cards are *validated* (ID: ISO 7064 MOD 11-2 check digit plus a real
  birth date between 1900 and today; card: Luhn, 13–19 digits, leading digit 2–6 or 8). Order numbers,
  timestamps and amounts are what ops needs to read, and without validation every long number would
  vanish. The cost: a mistyped ID or card number (bad check digit) is not redacted. 15-digit legacy IDs,
  plain 10-digit US numbers and full-width digits are not recognised.
* The Luhn and MOD 11-2 checks are a few lines each, so they are written here rather than pulling in
  ``python-stdnum`` (its ``luhn`` and ``cn.ric`` modules would be drop-in replacements).
* ``redact_obj`` leaves dict keys alone but replaces the whole value of a credential-named key
  (``password``, ``api_key``, ``Authorization``…), since ``{"password": "hunter2"}`` carries no
  ``password=`` text for the string rules to find.
* ``RedactingFilter`` also redacts traceback text (exception messages often quote user input): it renders
  the traceback itself and hands it on as ``exc_text`` (used by ``logging.Formatter``) and as an ``exc``
  attribute (emitted by ``JsonFormatter``'s extras), clearing ``exc_info`` so no formatter re-renders it raw.
  The context variables (request/session/user id) are read by the formatter, not the record, and are
  therefore not seen here: ``JsonFormatter`` redacts them itself (``redact_id``), since a caller can
  choose each of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

__all__ = [
    "SECRET_KEY_RE",
    "RedactingFilter",
    "Redactor",
    "Rule",
    "default_rules",
    "is_cn_resident_id",
    "luhn_valid",
]

# Not an ASCII letter/digit on either side: works inside Chinese text, never splits an identifier.
_L = r"(?<![A-Za-z0-9])"
_R = r"(?![A-Za-z0-9])"

_KEY_NAME = (
    r"(?:[A-Za-z0-9]+[_-])*(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|credentials?|authorization|cookie)"
)
SECRET_KEY_RE = re.compile(rf"{_KEY_NAME}|密码|口令|密钥|令牌", re.IGNORECASE)
"""Dict keys (full match) and ``key=value`` names whose value is a credential."""


@dataclass(frozen=True)
class Rule:
    """One kind of sensitive text: where it is, what replaces it, and an optional check against false hits.

    If ``pattern`` has a group named ``secret`` only that group is replaced (``password=[SECRET]``
    keeps the key readable); ``validate`` gets the replaced text and returns False to leave it be.
    """

    name: str
    pattern: re.Pattern[str]
    label: str
    validate: Callable[[str], bool] | None = None

    def apply(self, text: str) -> str:
        return self.pattern.sub(self._replace, text)

    def _replace(self, m: re.Match[str]) -> str:
        whole = m.group(0)
        if "secret" in self.pattern.groupindex and m.group("secret") is not None:
            start, end = m.start("secret") - m.start(), m.end("secret") - m.start()
        else:
            start, end = 0, len(whole)
        if self.validate is not None and not self.validate(whole[start:end]):
            return whole
        return whole[:start] + self.label + whole[end:]


def luhn_valid(number: str) -> bool:
    """Luhn checksum over the digits of ``number`` (separators ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return bool(digits) and total % 10 == 0


def _card_valid(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


_ID_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]
_ID_CHECK_CHARS = "10X98765432"


def is_cn_resident_id(text: str, today: date | None = None) -> bool:
    """18-character PRC resident ID: ISO 7064 MOD 11-2 check character and a plausible birth date."""
    s = text.upper()
    if len(s) != 18 or not s[:17].isdigit():
        return False
    if _ID_CHECK_CHARS[sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS, strict=True)) % 11] != s[17]:
        return False
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= (today or date.today())


def default_rules() -> list[Rule]:
    """The built-in rules, in the order they run: secrets first (they contain digits and ``@``), phones last."""
    secret, c = "[SECRET]", re.compile
    return [
        Rule(
            "private_key",
            c(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
            secret,
        ),
        Rule("jwt", c(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), secret),
        Rule(
            "url_password", c(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:(?P<secret>[^\s@/]+)@"), secret
        ),
        # prose ("basic authentication") must survive: the credential needs a digit, "=" padding or 20+ chars
        Rule(
            "bearer",
            c(
                r"(?i:\b(?:bearer|basic))[ ]+(?P<secret>(?=[A-Za-z._~+/-]*[0-9])[A-Za-z0-9._~+/-]{8,}=*"
                r"|[A-Za-z0-9._~+/-]{8,}=+|[A-Za-z0-9._~+/-]{20,})"
            ),
            secret,
        ),
        Rule("openai_key", c(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}"), secret),
        # ragvigil's own API keys: "rv_" + 43 url-safe characters (ops/access.py); the 10-character
        # prefix that key listings and the audit trail show stays readable
        Rule("ragvigil_key", c(rf"{_L}rv_[A-Za-z0-9_-]{{20,}}"), secret),
        Rule("stripe_key", c(rf"{_L}[sr]k_(?:live|test)_[A-Za-z0-9]{{16,}}"), secret),
        Rule("aws_access_key", c(rf"{_L}(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{{16}}{_R}"), secret),
        Rule("github_token", c(rf"{_L}(?:gh[pousr]_[A-Za-z0-9]{{36,255}}|github_pat_[A-Za-z0-9_]{{22,255}})"), secret),
        Rule("slack_token", c(rf"{_L}xox[abprs]-[A-Za-z0-9-]{{10,}}"), secret),
        Rule(
            "key_value",
            c(
                rf"(?:(?<![A-Za-z0-9_-])-*{_KEY_NAME}|密码|口令|密钥|令牌)[\"']?[ \t]*[:=：][ \t]*"
                r"(?:(?P<q>[\"']))?(?P<secret>(?(q)[^\"'\n]+|(?:(?:bearer|basic|token)[ ]+)?[^\s'\",;&，。；]+))",
                re.IGNORECASE,
            ),
            secret,
        ),
        Rule(
            "email",
            c(
                r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
            ),
            "[EMAIL]",
        ),
        Rule(
            "cn_resident_id",
            c(
                rf"{_L}[1-8][0-9]{{5}}(?:18|19|20)[0-9]{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{{3}}[0-9Xx]{_R}"
            ),
            "[CN_ID]",
            is_cn_resident_id,
        ),
        Rule(
            "cn_mobile",
            c(r"(?<![A-Za-z0-9+])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}" + _R),
            "[PHONE]",
        ),
        Rule(
            "card",
            c(
                rf"{_L}(?:[2-68][0-9]{{3}}([ -])[0-9]{{4}}\1[0-9]{{4}}(?:\1[0-9]{{4}})?(?:\1[0-9]{{1,3}})?"
                rf"|3[0-9]{{3}}([ -])[0-9]{{6}}\2[0-9]{{4,5}}|[2-68][0-9]{{12,18}}){_R}"
            ),
            "[CARD]",
            _card_valid,
        ),
        Rule("intl_phone", c(r"(?<![A-Za-z0-9+])\+[1-9](?:[ .()-]{0,2}[0-9]){7,14}(?![0-9])"), "[PHONE]"),
        Rule(
            "us_phone",
            c(rf"{_L}(?:1[ .-])?(?:\([2-9][0-9]{{2}}\)[ ]?|[2-9][0-9]{{2}}[ .-])[2-9][0-9]{{2}}[ .-][0-9]{{4}}{_R}"),
            "[PHONE]",
        ),
    ]


_EVENT_NAME = re.compile(r"[a-z_]{1,64}")
_SERVICE_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: the request and session ids ragvigil makes


class Redactor:
    """Applies an ordered list of rules to strings, and to strings nested in dicts/lists/tuples."""

    def __init__(self, rules: Iterable[Rule] | None = None, secret_keys: re.Pattern[str] | None = SECRET_KEY_RE):
        self.rules: tuple[Rule, ...] = tuple(default_rules() if rules is None else rules)
        self.secret_keys = secret_keys

    def redact(self, text: str) -> str:
        if _EVENT_NAME.fullmatch(text):
            return text  # "http_request": lowercase letters and _ carry no address, number or token
        for rule in self.rules:
            text = rule.apply(text)
        return text

    def redact_id(self, value: str) -> str:
        """``redact`` for an id a caller may have chosen (X-Request-ID, user id); ids we made pass at once."""
        return value if _SERVICE_ID.fullmatch(value) else self.redact(value)

    def redact_obj(self, obj: Any) -> Any:
        """A redacted copy of ``obj``; keys are kept, credential-named keys lose their whole value."""
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {k: self._redact_item(k, v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.redact_obj(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.redact_obj(v) for v in obj)
        return obj

    def _redact_item(self, key: object, value: Any) -> Any:
        if value is not None and isinstance(key, str) and self.secret_keys and self.secret_keys.fullmatch(key):
            return "[SECRET]"
        return self.redact_obj(value)


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_TRACEBACKS = logging.Formatter()


# Structured fields the service itself fills with values that cannot carry personal data (route
# templates, methods, stage names and timings): skipping them keeps redaction off the hot path.
# Only values ragvigil chose may be here: the request middleware logs a method outside the standard
# ones as "_OTHER", and a route template or "unmatched", never the path a caller sent.
SAFE_EXTRAS = frozenset(
    {"route", "method", "status", "ms", "stage", "outcome", "stages_ms", "persisted_to", "sources", "degraded"}
)


class RedactingFilter(logging.Filter):
    """Rewrites each record in place so every later formatter sees only redacted text; never drops a record.

    If redaction itself fails the message and extras are withheld rather than written raw, and the
    exception is not raised into the code that logged.
    """

    def __init__(self, redactor: Redactor | None = None, name: str = "") -> None:
        super().__init__(name)
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True  # the same record passes every handler: redact it once
        try:
            self._redact(record)
        except Exception as exc:
            self._withhold(record, exc)
        record._redacted = True  # type: ignore[attr-defined]
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # args that don't fit the format: keep the template, drop the args
            message = f"{record.msg} [log arguments did not match the format]"
        record.msg, record.args = self.redactor.redact(message), None
        for key, value in list(record.__dict__.items()):
            if (
                key not in _RECORD_ATTRS
                and key not in SAFE_EXTRAS
                and key[:1] != "_"  # private to the handlers (e.g. the ids the formatter redacts itself)
                and isinstance(value, str | dict | list | tuple)
            ):
                setattr(record, key, self.redactor.redact_obj(value))
        if record.exc_info:
            record.exc_text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
            record.exc = record.exc_text  # type: ignore[attr-defined]  # JsonFormatter emits extras: its "exc" field
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)

    @staticmethod
    def _withhold(record: logging.LogRecord, exc: Exception) -> None:
        record.msg, record.args = f"[log message withheld: redaction failed with {type(exc).__name__}]", None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        for key in [k for k in record.__dict__ if k not in _RECORD_ATTRS]:
            delattr(record, key)
