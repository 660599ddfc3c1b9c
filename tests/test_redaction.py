"""PII and secrets are replaced before logs are written; ordinary numbers stay readable."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator

import pytest

from ragvigil.ops.logging import JsonFormatter
from ragvigil.ops.redaction import RedactingFilter, Redactor, Rule, default_rules, is_cn_resident_id, luhn_valid

GH_TOKEN = "ghp_" + "A1b2C3d4E5" * 4
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我的手机号是13812345678，邮箱是a.b@example.com", "我的手机号是[PHONE]，邮箱是[EMAIL]"),
        ("联系电话：+86 138-1234-5678。", "联系电话：[PHONE]。"),
        ("备用86 139 1234 5678或0086-15012345678", "备用[PHONE]或[PHONE]"),
        ("身份证号11010519491231002X已登记", "身份证号[CN_ID]已登记"),
        ("身份证 440306199003071232 请核对", "身份证 [CN_ID] 请核对"),
        ("卡号6011111111111117，谢谢", "卡号[CARD]，谢谢"),
        ("Contact jane.doe+rag@mail.example.co.uk today", "Contact [EMAIL] today"),
        ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27"),
        ("amex 3782-822463-10005 on file", "amex [CARD] on file"),
        ("call +44 20 7946 0958 or +1 (415) 555-2671", "call [PHONE] or [PHONE]"),
        ("US: (415) 555-2671, 415-555-2671, 415.555.2671, 1-800-555-1234", "US: [PHONE], [PHONE], [PHONE], [PHONE]"),
        ("key sk-proj-abcdefghijklmnop1234 used", "key [SECRET] used"),
        ("aws AKIAIOSFODNN7EXAMPLE ok", "aws [SECRET] ok"),
        (f"gh {GH_TOKEN} ok", "gh [SECRET] ok"),
        (f"session {JWT}", "session [SECRET]"),
        ("curl -H 'X: Bearer abc123def456ghi789'", "curl -H 'X: Bearer [SECRET]'"),
        ("password=hunter2 user=bob", "password=[SECRET] user=bob"),
        ("run --db-password=abc x-api-key: k123", "run --db-password=[SECRET] x-api-key: [SECRET]"),
        ("api_key: abc-123, retries: 3", "api_key: [SECRET], retries: 3"),
        ("GET /cb?token=xyz987&page=2", "GET /cb?token=[SECRET]&page=2"),
        ('{"db_password": "my pass word", "n": 1}', '{"db_password": "[SECRET]", "n": 1}'),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=[SECRET]"),
        ("密码：abc123，请勿外传", "密码：[SECRET]，请勿外传"),
        (
            "postgresql+psycopg://rag:s3cret@db.internal:5432/rag",
            "postgresql+psycopg://rag:[SECRET]@db.internal:5432/rag",
        ),
    ],
)
def test_redacts(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "订单号 2026112400012 已发货",  # 13 digits, fails Luhn
        "订单号2026112400012",
        "价格 ¥1999.00，优惠 $1,234.56",
        "日期 2024-11-24 10:30:00，时间戳 2024-11-24T10:30:00.123+08:00",
        "验证码 123456，5 分钟内有效",
        "验证码是654321",
        "request 550e8400-e29b-41d4-a716-446655440000 took 1732406400123 ms",
        "card-like 4111 1111 1111 1112 fails Luhn",
        "身份证 110101199002301236 日期不存在",  # valid check digit, 30 February
        "身份证 110101209901011239 生日在未来",  # valid check digit, born 2099
        "身份证 110105194912310021 校验位错",
        "basic authentication failed for the bearer of this note",
        "max_tokens=512 prompt_tokens: 30 token_count=7",
        "version 1.2.3, build 20241124, port 8080, user_id 42",
    ],
)
def test_leaves_ordinary_text_alone(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == text


def test_redaction_is_idempotent(redactor: Redactor) -> None:
    once = redactor.redact("手机13812345678 password=x 4111111111111111 a@b.cn")
    assert redactor.redact(once) == once


def test_validators() -> None:
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("2026112400012")
    assert is_cn_resident_id("11010519491231002x")
    assert not is_cn_resident_id("110101199002301236")  # 30 February


def test_redact_obj_walks_values_not_keys(redactor: Redactor) -> None:
    obj = {
        "a@b.com": "mail a@b.com",
        "user": {"phones": ["13812345678", ("+44 20 7946 0958", 5)], "age": 30},
        "password": "hunter2",
        "Authorization": "whatever",
        "max_tokens": 512,
        "note": None,
    }
    assert redactor.redact_obj(obj) == {
        "a@b.com": "mail [EMAIL]",
        "user": {"phones": ["[PHONE]", ("[PHONE]", 5)], "age": 30},
        "password": "[SECRET]",
        "Authorization": "[SECRET]",
        "max_tokens": 512,
        "note": None,
    }


def test_rules_are_configurable() -> None:
    ticket = Rule("ticket", re.compile(r"TCK-\d+"), "[TICKET]")
    custom = Redactor([r for r in default_rules() if r.name != "email"] + [ticket])
    assert custom.redact("a@b.com TCK-42 13812345678") == "a@b.com [TICKET] [PHONE]"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactingFilter(Redactor()))
    logger.addHandler(handler)
    yield logger, buf, handler
    logger.removeHandler(handler)
    handler.close()


def test_filter_on_a_json_logger(captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.info(
        "用户 %s 登录，手机 %s",
        "a.b@example.com",
        "13812345678",
        extra={"payload": {"card": "4111111111111111", "password": "p"}, "ids": ["11010519491231002X"], "n": 7},
    )
    out = json.loads(buf.getvalue())
    assert out["event"] == "用户 [EMAIL] 登录，手机 [PHONE]"
    assert out["payload"] == {"card": "[CARD]", "password": "[SECRET]"}
    assert out["ids"] == ["[CN_ID]"] and out["n"] == 7
    assert "13812345678" not in buf.getvalue() and "example.com" not in buf.getvalue()


def test_filter_redacts_tracebacks(captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(JsonFormatter())
    try:
        raise ValueError("bad address a.b@example.com")
    except ValueError:
        logger.exception("lookup failed for %s", "13812345678")
    out = json.loads(buf.getvalue())
    assert out["event"] == "lookup failed for [PHONE]"
    assert "ValueError: bad address [EMAIL]" in out["exc"] and "Traceback" in out["exc"]
    assert "example.com" not in buf.getvalue()


def test_filter_with_plain_formatter(captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.warning("token=%s for %s", "abc123", "a@b.cn")
    try:
        raise RuntimeError("card 4111 1111 1111 1111")
    except RuntimeError:
        logger.error("charge failed", exc_info=True)
    text = buf.getvalue()
    assert text.startswith("WARNING token=[SECRET] for [EMAIL]\nERROR charge failed\nTraceback")
    assert "RuntimeError: card [CARD]" in text and "4111" not in text


def test_filter_survives_mismatched_args(captured: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.info("call %s and %s", "13812345678")  # one argument short
    assert buf.getvalue() == "call %s and %s [log arguments did not match the format]\n"
