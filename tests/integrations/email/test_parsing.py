"""Unit tests for integrations.email.parsing: pure functions, no Django, no database."""

from __future__ import annotations

import base64
import datetime as dt
import random

import pytest

from integrations.email import parsing as email_parsing
from integrations.email.parsing import (
    EmailParseError,
    ParsedEmail,
    decode_bytes,
    decode_header_value,
    html_to_text,
    parse_message,
)
from tests.support import email_samples as samples
from tests.support.email_samples import build, envelope

UTC = dt.UTC


def _text_fields(parsed: ParsedEmail) -> list[str]:
    """Every str the parser produced, for invariants that hold for all of them."""
    values = [
        parsed.subject,
        parsed.from_address,
        parsed.from_name,
        parsed.body_text,
        parsed.reply_to,
        parsed.auto_reason,
        *parsed.to,
        *parsed.cc,
        *parsed.references,
    ]
    values += [a.filename for a in parsed.attachments]
    values += [v for v in (parsed.message_id, parsed.in_reply_to) if v]
    return values


def _mime(content_type: str, body: bytes, **headers: str) -> bytes:
    """A one-part message with the given Content-Type and extra headers."""
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    head = envelope(subject="t", message_id="<t@x>", extra=extra)
    head.append(("Content-Type", content_type))
    return build(head, body)


# -- the required vectors ---------------------------------------------------


def test_plain_message_fields() -> None:
    raw = samples.plain(
        "Printer is on fire",
        "Hello,\n\nit burns.\n",
        message_id="<abc@example.com>",
    )
    parsed = parse_message(raw)
    assert parsed.message_id == "<abc@example.com>"
    assert parsed.subject == "Printer is on fire"
    assert parsed.from_address == "alice@example.com"
    assert parsed.from_name == "Alice Customer"
    assert parsed.to == ["support@zenith.test"]
    assert parsed.date == dt.datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    assert parsed.date is not None
    assert parsed.date.tzinfo is not None
    assert parsed.body_text == "Hello,\n\nit burns."
    assert parsed.attachments == []
    assert (parsed.is_auto, parsed.auto_reason, parsed.is_bounce) == (False, "", False)
    assert parsed.ticket_tag is None
    assert parsed.in_reply_to is None
    assert parsed.references == []


def test_html_only_is_converted_to_readable_text() -> None:
    body = parse_message(samples.html_only()).body_text
    assert "Hello **team** & friends," in body
    assert "[the status page](https://status.example.com)" in body
    assert "* first" in body
    assert "* second" in body
    assert "Café \u2013 ok" in body
    # Markup, scripts and styles must not leak into the ticket text.
    for leaked in ("<p>", "<b>", "alert(", "color: red", "&amp;", "&eacute;"):
        assert leaked not in body
    assert "\n\n\n" not in body


def test_alternative_prefers_plain_and_html_is_not_an_attachment() -> None:
    parsed = parse_message(samples.alternative(text="Plain wins.\n", html="<p>HTML</p>"))
    assert parsed.body_text == "Plain wins."
    assert parsed.attachments == []


def test_alternative_with_blank_plain_part_falls_back_to_html() -> None:
    parsed = parse_message(samples.alternative(text="   \n", html="<p>Only <i>here</i></p>"))
    assert parsed.body_text == "Only _here_"


def test_attachments_are_decoded_with_metadata() -> None:
    parsed = parse_message(samples.with_attachments(body="See files.\n"))
    assert parsed.body_text == "See files."
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        ("report.pdf", "application/pdf", len(samples.PDF_BYTES)),
        ("screenshot.png", "image/png", len(samples.PNG_BYTES)),
    ]
    assert parsed.attachments[0].payload == samples.PDF_BYTES
    assert parsed.attachments[1].payload == samples.PNG_BYTES
    assert not any(a.inline for a in parsed.attachments)


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        (samples.latin1, samples.LATIN1_TEXT),
        (samples.koi8r, samples.KOI8R_TEXT),
        (samples.shift_jis, samples.SHIFT_JIS_TEXT),
    ],
    ids=["iso-8859-1-qp", "koi8-r-8bit", "shift_jis-base64"],
)
def test_declared_charsets_decode_exactly(builder, expected: str) -> None:
    assert parse_message(builder()).body_text == expected


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        (samples.ascii_declared_utf8_body, samples.UTF8_TEXT),
        (samples.ascii_declared_latin1_body, "Café crème, s'il vous plaît."),
        (samples.unknown_charset, samples.UTF8_TEXT),
    ],
    ids=["us-ascii-but-utf8", "us-ascii-but-latin1", "nonexistent-charset"],
)
def test_wrong_declared_charsets_are_recovered(builder, expected: str) -> None:
    assert parse_message(builder()).body_text == expected


def test_broken_bytes_become_replacement_characters() -> None:
    body = parse_message(samples.broken_utf8()).body_text
    assert body.startswith("Valid start, broken ")
    assert body.endswith(" end.")
    assert "\ufffd" in body


def test_rfc2047_subject_and_display_name() -> None:
    parsed = parse_message(samples.encoded_subject())
    # Mixed B/Q words, three charsets and a UTF-8 character split across two words.
    assert parsed.subject == samples.ENCODED_SUBJECT
    # The encoded comma stays inside the name instead of splitting the address list.
    assert parsed.from_name == "Jörg Müller, Support"
    # Domains are case-insensitive and lower-cased; local parts are left alone.
    assert parsed.from_address == "JOERG@example.de"


def test_raw_8bit_utf8_headers() -> None:
    parsed = parse_message(samples.raw_8bit_headers())
    assert parsed.subject == "Grüße, ошибка & 故障"
    assert parsed.from_name == "Jörg Müller"
    assert parsed.from_address == "joerg@example.de"
    assert parsed.body_text == "Körper."


def test_raw_8bit_latin1_header_falls_back_to_windows_1252() -> None:
    head = envelope(subject="Caf\xe9 \x80 cr\xe8me".encode("latin-1"), message_id="<l1@x>")
    assert parse_message(build(head, b"x\n")).subject == "Café € crème"


def test_raw_8bit_header_uses_the_body_charset_as_hint() -> None:
    head = envelope(subject="Принтер".encode("koi8_r"), message_id="<k@x>")
    head.append(("Content-Type", "text/plain; charset=koi8-r"))
    assert parse_message(build(head, "тест".encode("koi8_r"))).subject == "Принтер"


def test_missing_message_id_subject_and_body() -> None:
    assert parse_message(samples.no_message_id()).message_id is None
    assert parse_message(samples.no_subject()).subject == ""
    parsed = parse_message(samples.no_body())
    assert parsed.body_text == ""
    assert parsed.attachments == []


def test_bounce_is_detected_and_original_message_is_not_the_body() -> None:
    parsed = parse_message(samples.bounce(failed_recipient="gone@example.com"))
    assert parsed.is_auto
    assert parsed.is_bounce
    assert parsed.auto_reason == "multipart/report (delivery-status)"
    assert "could not\nbe delivered to gone@example.com" in parsed.body_text
    assert "Original body" not in parsed.body_text
    # The tag inside the returned original must not route the bounce to ticket 42.
    assert parsed.ticket_tag is None
    types = [a.content_type for a in parsed.attachments]
    assert types == ["message/delivery-status", "message/rfc822"]
    original = parsed.attachments[1]
    assert original.filename.endswith(".eml")
    assert b"Message-ID: <original-1@zenith.test>" in original.payload
    assert b"Status: 5.1.1" in parsed.attachments[0].payload


def test_auto_reply_is_detected() -> None:
    parsed = parse_message(samples.auto_reply())
    assert parsed.is_auto
    assert not parsed.is_bounce
    assert parsed.auto_reason == "Auto-Submitted: auto-replied"


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("Auto-Submitted", "auto-generated", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted", "Auto-Replied; owner-email=x@y", "Auto-Submitted: auto-replied"),
        ("Precedence", "bulk", "Precedence: bulk"),
        ("Precedence", "JUNK", "Precedence: junk"),
        ("Precedence", "list", "Precedence: list"),
        ("X-Autoreply", "yes", "X-Autoreply: yes"),
        ("X-Autorespond", "Out of office", "X-Autorespond: Out of office"),
        ("X-Failed-Recipients", "a@b.c", "X-Failed-Recipients"),
        ("Return-Path", "<>", "Return-Path: <>"),
    ],
)
def test_auto_headers(header: str, value: str, reason: str) -> None:
    parsed = parse_message(samples.plain(extra_headers=[(header, value)]))
    assert parsed.is_auto
    assert parsed.auto_reason == reason


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Auto-Submitted", "no"),
        ("Precedence", "first-class"),
        ("X-Autoreply", "no"),
        ("Return-Path", "<alice@example.com>"),
    ],
)
def test_human_mail_is_not_auto(header: str, value: str) -> None:
    parsed = parse_message(samples.plain(extra_headers=[(header, value)]))
    assert not parsed.is_auto
    assert parsed.auto_reason == ""


def test_read_receipt_report_is_auto_but_not_a_bounce() -> None:
    raw = _mime(
        'multipart/report; report-type=disposition-notification; boundary="b"',
        b"--b\nContent-Type: text/plain\n\nDisplayed.\n--b--\n",
    )
    parsed = parse_message(raw)
    assert parsed.is_auto
    assert not parsed.is_bounce
    assert parsed.body_text == "Displayed."


@pytest.mark.parametrize(
    ("subject", "tag"),
    [
        ("Re: [#42] Printer", 42),
        ("[#7]", 7),
        ("AW: Re: Printer [#1234567]", 1234567),
        ("Printer #42", None),
        ("[# 42] spaced", None),
        ("[#abc]", None),
    ],
)
def test_ticket_tag(subject: str, tag: int | None) -> None:
    assert parse_message(samples.plain(subject)).ticket_tag == tag


def test_tagged_sample() -> None:
    assert parse_message(samples.tagged(42)).ticket_tag == 42


# -- headers in detail ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@example.com>", "<abc@example.com>"),
        ("  <abc@example.com>  (comment)", "<abc@example.com>"),
        ("abc@example.com", "<abc@example.com>"),
        ("<abc@\r\n example.com>", "<abc@example.com>"),
        ("<>", None),
    ],
)
def test_message_id_normalization(value: str, expected: str | None) -> None:
    head = envelope(subject="x", message_id=None, with_message_id=False)
    head.append(("Message-ID", value))
    assert parse_message(build(head, b"x\n")).message_id == expected


def test_threading_headers() -> None:
    head = envelope(
        subject="Re: x",
        message_id="<c@x>",
        in_reply_to="<b@x> (Alice's message of Monday)",
        references=["<a@x>", "junk", "<b@x>", "<a@x>"],
    )
    parsed = parse_message(build(head, b"x\n"))
    assert parsed.in_reply_to == "<b@x>"
    assert parsed.references == ["<a@x>", "<b@x>"]
    assert parsed.thread_message_ids == ["<b@x>", "<a@x>"]


def test_unbracketed_in_reply_to_prose_is_ignored() -> None:
    head = envelope(subject="x", message_id="<m@x>", in_reply_to="Your message of Monday")
    assert parse_message(build(head, b"x\n")).in_reply_to is None


def test_recipients_reply_to_and_sender_fallback() -> None:
    head = [
        ("Sender", "Bot <BOT@Example.COM>"),
        ("To", '"Doe, John" <john@x.test>, jane@X.TEST'),
        ("Cc", "=?utf-8?q?Z=C3=BC?= <z@x.test>"),
        ("Reply-To", "replies@x.test"),
        ("Subject", "x"),
    ]
    parsed = parse_message(build(head, b"x\n"))
    assert parsed.from_address == "BOT@example.com"
    assert parsed.from_name == "Bot"
    assert parsed.to == ["john@x.test", "jane@x.test"]
    assert parsed.cc == ["z@x.test"]
    assert parsed.reply_to == "replies@x.test"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 02 Jun 2025 10:00:00 -0000", dt.datetime(2025, 6, 2, 10, 0, tzinfo=UTC)),
        ("2 Jun 2025 12:00 +0200", dt.datetime(2025, 6, 2, 10, 0, tzinfo=UTC)),
        ("not a date", None),
        ("", None),
    ],
)
def test_dates_are_aware_or_none(value: str, expected: dt.datetime | None) -> None:
    head = [("From", "a@b.c"), ("Subject", "x"), ("Date", value)]
    parsed = parse_message(build(head, b"x\n"))
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.utcoffset() is not None


def test_decode_header_value_is_lenient() -> None:
    assert decode_header_value("=?utf-8?q?caf=C3=A9?=") == "café"
    # Bad base64 padding is repaired; unknown charsets and garbage do not raise.
    assert decode_header_value("=?utf-8?b?Y2Fmw6k?=") == "café"
    assert decode_header_value("=?x-bogus?q?abc?=") == "abc"
    assert decode_header_value("=?utf-8?b?!!!?=") == "=?utf-8?b?!!!?="
    assert decode_header_value("plain =?utf-8?q?w=C3=B6rd?= tail") == "plain wörd tail"


# -- MIME structure ---------------------------------------------------------


def test_inline_image_in_related_keeps_content_id() -> None:
    png = base64.encodebytes(samples.PNG_BYTES).decode()
    body = (
        "--r\nContent-Type: text/html; charset=utf-8\n\n"
        '<p>Look: <img src="cid:img1@x"></p>\n'
        "--r\nContent-Type: image/png\nContent-ID: <img1@x>\n"
        f"Content-Disposition: inline\nContent-Transfer-Encoding: base64\n\n{png}"
        "--r--\n"
    )
    parsed = parse_message(_mime('multipart/related; boundary="r"', body.encode()))
    assert parsed.body_text == "Look:"
    [image] = parsed.attachments
    assert (image.content_id, image.inline, image.content_type) == ("<img1@x>", True, "image/png")
    assert image.filename == "attachment-1.png"
    assert image.payload == samples.PNG_BYTES


def test_forwarded_message_is_an_attachment_not_the_body() -> None:
    inner = samples.plain("Inner", "Inner body\n")
    body = (
        b"--m\nContent-Type: text/plain\n\nOuter body\n"
        b"--m\nContent-Type: message/rfc822\n\n" + inner + b"\n--m--\n"
    )
    parsed = parse_message(_mime('multipart/mixed; boundary="m"', body))
    assert parsed.body_text == "Outer body"
    [attached] = parsed.attachments
    assert attached.content_type == "message/rfc822"
    assert parse_message(attached.payload).subject == "Inner"


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("attachment; filename*=utf-8''%C3%BCbersicht.txt", "übersicht.txt"),
        ('attachment; filename="=?utf-8?q?=C3=BCbersicht=2Etxt?="', "übersicht.txt"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="C:\\\\Users\\\\x\\\\evil.exe"', "evil.exe"),
        ("attachment", "attachment-1.pdf"),
    ],
)
def test_attachment_filenames_are_decoded_and_sanitized(disposition: str, expected: str) -> None:
    body = (
        "--m\nContent-Type: text/plain\n\nbody\n"
        f"--m\nContent-Type: application/pdf\nContent-Disposition: {disposition}\n\n%PDF\n"
        "--m--\n"
    )
    parsed = parse_message(_mime('multipart/mixed; boundary="m"', body.encode()))
    assert [a.filename for a in parsed.attachments] == [expected]


def test_text_part_with_filename_is_an_attachment() -> None:
    body = (
        b"--m\nContent-Type: text/plain\n\nreal body\n"
        b'--m\nContent-Type: text/plain; name="log.txt"\n\nlog line\n--m--\n'
    )
    parsed = parse_message(_mime('multipart/mixed; boundary="m"', body))
    assert parsed.body_text == "real body"
    assert [(a.filename, a.payload.strip()) for a in parsed.attachments] == [
        ("log.txt", b"log line")
    ]


def test_html_meta_charset_is_used_when_no_charset_is_declared() -> None:
    html = '<html><head><meta charset="windows-1251"></head><body>Привет</body></html>'
    raw = _mime("text/html", html.encode("cp1251"), Content_Transfer_Encoding="8bit")
    assert parse_message(raw).body_text == "Привет"


def test_broken_base64_body_does_not_raise() -> None:
    raw = _mime(
        "text/plain; charset=utf-8", b"SGVsbG8g!!!d29y\n", Content_Transfer_Encoding="base64"
    )
    assert isinstance(parse_message(raw).body_text, str)


def test_multipart_without_boundary_is_read_as_text() -> None:
    parsed = parse_message(_mime("multipart/mixed", b"just text\n"))
    assert parsed.body_text == "just text"


def test_lf_only_line_endings() -> None:
    raw = samples.plain("LF", "one\ntwo\n").replace(b"\r\n", b"\n")
    parsed = parse_message(raw)
    assert (parsed.subject, parsed.body_text) == ("LF", "one\ntwo")


def test_nul_bytes_and_control_characters_are_removed() -> None:
    head = envelope(subject="a\x00b\x07c", message_id="<n@x>")
    parsed = parse_message(build(head, b"x\x00y\n"))
    assert parsed.subject == "abc"
    assert parsed.body_text == "xy"


# -- errors and robustness --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b" \r\n\r\n ", "empty message"),
        (b"just some words, no headers at all\n", "no header fields"),
        ("From: a@b.c\n\nstr, not bytes", "expected bytes"),
    ],
)
def test_unparseable_input_raises_email_parse_error(raw: object, reason: str) -> None:
    with pytest.raises(EmailParseError) as excinfo:
        parse_message(raw)  # type: ignore[arg-type]
    assert reason in excinfo.value.reason
    assert isinstance(excinfo.value, ValueError)


def test_falls_back_to_compat32_when_the_default_policy_crashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_extract = email_parsing._extract

    def crash_on_default_policy(msg, *args):  # type: ignore[no-untyped-def]
        if msg.policy is email_parsing.policy.default:
            raise IndexError("simulated header registry crash")
        return real_extract(msg, *args)

    monkeypatch.setattr(email_parsing, "_extract", crash_on_default_policy)
    parsed = parse_message(samples.encoded_subject())
    assert parsed.subject == samples.ENCODED_SUBJECT
    assert parsed.body_text == "Encoded headers."


def test_compat32_fallback_matches_default_policy_for_every_sample() -> None:
    from email import policy
    from email.parser import BytesParser

    for name, raw in samples.all_samples().items():
        results = [
            email_parsing._extract(BytesParser(policy=p).parsebytes(raw), len(raw))
            for p in (policy.default, policy.compat32)
        ]
        assert results[0] == results[1], name


def test_html_to_text_survives_a_parser_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("libxml2 bug")

    monkeypatch.setattr(email_parsing.etree, "fromstring", boom)
    text = html_to_text("<p>Hello</p><p>World</p>")
    assert "Hello" in text
    assert "World" in text
    assert "<p>" not in text


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        (b"caf\xc3\xa9", "utf-8", "café"),
        (b"caf\xe9", "iso-8859-1", "café"),
        (b"\x93quoted\x94", "iso-8859-1", "\u201cquoted\u201d"),
        (b"caf\xc3\xa9", "iso-8859-1", "café"),
        (b"caf\xe9", None, "café"),
        (b"caf\xe9", "base64", "café"),
        (b"\xef\xbb\xbfbom", "utf-8", "bom"),
        (b"\x82\xa0", "shift-jis", "あ"),
        ("한국".encode("cp949"), "ks_c_5601-1987", "한국"),
        (b"", "utf-8", ""),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


def test_every_sample_parses_without_surrogates_or_nul() -> None:
    for name, raw in samples.all_samples().items():
        parsed = parse_message(raw)
        for value in _text_fields(parsed):
            assert "\x00" not in value, name
            value.encode("utf-8")  # lone surrogates would raise here (and in PostgreSQL)


def test_mangled_messages_only_ever_raise_email_parse_error() -> None:
    rng = random.Random(1234)
    for raw in samples.all_samples().values():
        variants = [raw[:cut] for cut in range(0, len(raw), max(1, len(raw) // 25))]
        for _ in range(100):
            mutated = bytearray(raw)
            for _ in range(8):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            variants.append(bytes(mutated))
        for variant in variants:
            try:
                parsed = parse_message(variant)
            except EmailParseError:
                continue
            for value in _text_fields(parsed):
                value.encode("utf-8")
