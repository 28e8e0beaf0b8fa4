"""Builders of raw e-mail messages (bytes) for parsing tests and for APPENDing to Dovecot.

Messages are assembled by hand, not with the ``email`` package, so the parser
under test never sees input shaped by its own library. Every builder returns
CRLF-terminated bytes with a fresh Message-ID unless one is given.
"""

from __future__ import annotations

import base64
import quopri
import uuid
from collections.abc import Callable, Iterable, Sequence

DEFAULT_FROM = "Alice Customer <alice@example.com>"
DEFAULT_TO = "support@zenith.test"
DEFAULT_DATE = "Mon, 02 Jun 2025 10:00:00 +0200"

# Texts the charset samples carry, so tests can compare decoded output exactly.
LATIN1_TEXT = "Grüße aus Köln: der Drucker ist kaputt, Ça coûte 50 €."
KOI8R_TEXT = "Здравствуйте! Принтер не печатает."
SHIFT_JIS_TEXT = "こんにちは。プリンターが故障しました。"
# U+2013 EN DASH: a common multibyte character that is not in Latin-1.
EN_DASH = "\u2013"
UTF8_TEXT = f"Grüße {EN_DASH} naïve café ✓"
ENCODED_SUBJECT = f"Über den Drucker {EN_DASH} ошибка 「故障」"

# A one-pixel PNG and a tiny PDF: real magic numbers, small payloads.
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF_BYTES = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

Header = tuple[str, str | bytes]


def make_message_id(domain: str = "example.com") -> str:
    """Return a fresh, unique Message-ID."""
    return f"<{uuid.uuid4().hex}@{domain}>"


def _line(name: str, value: str | bytes) -> bytes:
    """Encode one header line; bytes values are written raw (8-bit headers)."""
    raw = value if isinstance(value, bytes) else value.encode("ascii")
    return name.encode("ascii") + b": " + raw


def _crlf(data: bytes) -> bytes:
    """Normalize line endings to CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def build(headers: Iterable[Header], body: bytes) -> bytes:
    """Join header lines and a body into a raw message."""
    head = b"\r\n".join(_line(name, value) for name, value in headers)
    return head + b"\r\n\r\n" + _crlf(body)


def envelope(
    *,
    subject: str | bytes | None,
    message_id: str | None,
    from_: str | bytes = DEFAULT_FROM,
    to: str = DEFAULT_TO,
    date: str = DEFAULT_DATE,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    extra: Iterable[Header] = (),
    with_message_id: bool = True,
) -> list[Header]:
    """Return the usual top-level headers; None subject means no Subject header."""
    headers: list[Header] = [("From", from_), ("To", to), ("Date", date)]
    if subject is not None:
        headers.append(("Subject", subject))
    if with_message_id:
        headers.append(("Message-ID", message_id or make_message_id()))
    if in_reply_to:
        headers.append(("In-Reply-To", in_reply_to))
    if references:
        headers.append(("References", " ".join(references)))
    headers.extend(extra)
    headers.append(("MIME-Version", "1.0"))
    return headers


def _b64(data: bytes) -> bytes:
    """Base64 with 76-character lines, as MIME requires."""
    return base64.encodebytes(data)


def plain(
    subject: str = "Printer is on fire",
    body: str = "Hello,\n\nthe printer on floor 3 is on fire.\n\nAlice\n",
    *,
    message_id: str | None = None,
    from_: str = DEFAULT_FROM,
    to: str = DEFAULT_TO,
    date: str = DEFAULT_DATE,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    extra_headers: Iterable[Header] = (),
) -> bytes:
    """A single-part UTF-8 text/plain message."""
    headers = envelope(
        subject=subject,
        message_id=message_id,
        from_=from_,
        to=to,
        date=date,
        in_reply_to=in_reply_to,
        references=references,
        extra=extra_headers,
    )
    headers += [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return build(headers, body.encode("utf-8"))


def reply(
    *,
    parent_message_id: str,
    ticket_id: int | None = None,
    subject: str = "Re: Printer is on fire",
    body: str = "Thanks, it is still burning.\n",
    message_id: str | None = None,
    from_: str = DEFAULT_FROM,
) -> bytes:
    """A reply threading onto parent_message_id, optionally tagged [#ticket_id]."""
    if ticket_id is not None:
        subject = f"{subject} [#{ticket_id}]"
    return plain(
        subject,
        body,
        message_id=message_id,
        from_=from_,
        in_reply_to=parent_message_id,
        references=[parent_message_id],
    )


HTML_BODY = (
    "<!DOCTYPE html><html><head><style>p { color: red; }</style>"
    "<script>alert('x')</script></head><body>"
    "<p>Hello <b>team</b> &amp; friends,</p>"
    "<p>see <a href='https://status.example.com'>the status page</a>.</p>"
    "<ul><li>first</li><li>second</li></ul>"
    "<p>Caf&eacute; &#8211; ok</p></body></html>"
)


def html_only(
    subject: str = "HTML only",
    html: str = HTML_BODY,
    *,
    message_id: str | None = None,
    from_: str = DEFAULT_FROM,
) -> bytes:
    """A single-part text/html message (quoted-printable)."""
    headers = envelope(subject=subject, message_id=message_id, from_=from_)
    headers += [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Transfer-Encoding", "quoted-printable"),
    ]
    return build(headers, quopri.encodestring(html.encode("utf-8")))


def alternative(
    subject: str = "Alternative",
    *,
    text: str = "Plain version wins.\n",
    html: str = "<p>HTML version <b>loses</b>.</p>",
    message_id: str | None = None,
    from_: str = DEFAULT_FROM,
) -> bytes:
    """multipart/alternative with text/plain and text/html parts."""
    boundary = "alt-" + uuid.uuid4().hex
    headers = envelope(subject=subject, message_id=message_id, from_=from_)
    headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
    body = (
        f"This is a multi-part message in MIME format.\n"
        f"--{boundary}\n"
        f"Content-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n\n"
        f"{text}\n"
        f"--{boundary}\n"
        f"Content-Type: text/html; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n\n"
        f"{html}\n"
        f"--{boundary}--\n"
    )
    return build(headers, body.encode("utf-8"))


DEFAULT_ATTACHMENTS: tuple[tuple[str, str, bytes], ...] = (
    ("report.pdf", "application/pdf", PDF_BYTES),
    ("screenshot.png", "image/png", PNG_BYTES),
)


def with_attachments(
    subject: str = "Logs attached",
    body: str = "See the attached files.\n",
    *,
    attachments: Sequence[tuple[str, str, bytes]] = DEFAULT_ATTACHMENTS,
    message_id: str | None = None,
    from_: str = DEFAULT_FROM,
) -> bytes:
    """multipart/mixed: a text body plus base64 attachments given as (name, type, bytes)."""
    boundary = "mixed-" + uuid.uuid4().hex
    headers = envelope(subject=subject, message_id=message_id, from_=from_)
    headers.append(("Content-Type", f'multipart/mixed; boundary="{boundary}"'))
    chunks = [
        f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n\n{body}\n".encode()
    ]
    for filename, content_type, payload in attachments:
        chunks.append(
            f'--{boundary}\nContent-Type: {content_type}; name="{filename}"\n'
            f'Content-Disposition: attachment; filename="{filename}"\n'
            f"Content-Transfer-Encoding: base64\n\n".encode()
            + _b64(payload)
        )
    chunks.append(f"--{boundary}--\n".encode())
    return build(headers, b"".join(chunks))


def _charset_message(
    *,
    subject: str,
    body: bytes,
    charset: str,
    transfer_encoding: str,
    message_id: str | None,
) -> bytes:
    """A text/plain message whose body bytes are already in charset."""
    if transfer_encoding == "base64":
        body = _b64(body)
    elif transfer_encoding == "quoted-printable":
        body = quopri.encodestring(body)
    headers = envelope(subject=subject, message_id=message_id)
    headers += [
        ("Content-Type", f"text/plain; charset={charset}"),
        ("Content-Transfer-Encoding", transfer_encoding),
    ]
    return build(headers, body)


def latin1(*, message_id: str | None = None) -> bytes:
    """ISO-8859-1 declared, quoted-printable; the euro sign is really windows-1252."""
    return _charset_message(
        subject="ISO-8859-1 body",
        body=LATIN1_TEXT.encode("cp1252"),
        charset="iso-8859-1",
        transfer_encoding="quoted-printable",
        message_id=message_id,
    )


def koi8r(*, message_id: str | None = None) -> bytes:
    """KOI8-R body sent as raw 8-bit."""
    return _charset_message(
        subject="KOI8-R body",
        body=KOI8R_TEXT.encode("koi8_r"),
        charset="koi8-r",
        transfer_encoding="8bit",
        message_id=message_id,
    )


def shift_jis(*, message_id: str | None = None) -> bytes:
    """Shift_JIS body, base64 encoded."""
    return _charset_message(
        subject="Shift_JIS body",
        body=SHIFT_JIS_TEXT.encode("shift_jis"),
        charset="shift_jis",
        transfer_encoding="base64",
        message_id=message_id,
    )


def ascii_declared_utf8_body(*, message_id: str | None = None) -> bytes:
    """Declares us-ascii but carries UTF-8 bytes."""
    return _charset_message(
        subject="Wrong charset (UTF-8)",
        body=UTF8_TEXT.encode("utf-8"),
        charset="us-ascii",
        transfer_encoding="8bit",
        message_id=message_id,
    )


def ascii_declared_latin1_body(*, message_id: str | None = None) -> bytes:
    """Declares us-ascii but carries Latin-1 bytes."""
    return _charset_message(
        subject="Wrong charset (Latin-1)",
        body="Café crème, s'il vous plaît.".encode("latin-1"),
        charset="us-ascii",
        transfer_encoding="8bit",
        message_id=message_id,
    )


def unknown_charset(*, message_id: str | None = None) -> bytes:
    """Declares a charset that does not exist; the bytes are UTF-8."""
    return _charset_message(
        subject="Unknown charset",
        body=UTF8_TEXT.encode("utf-8"),
        charset="x-no-such-charset",
        transfer_encoding="8bit",
        message_id=message_id,
    )


def broken_utf8(*, message_id: str | None = None) -> bytes:
    """Declares UTF-8 but contains invalid byte sequences."""
    return _charset_message(
        subject="Broken UTF-8",
        body=b"Valid start, broken \xff\xfe bytes, truncated \xe2\x82 end.",
        charset="utf-8",
        transfer_encoding="8bit",
        message_id=message_id,
    )


def encoded_subject(*, message_id: str | None = None) -> bytes:
    """RFC 2047 subject mixing B/Q words and charsets, with a character split across words."""
    # "Über den Drucker <dash> " as UTF-8 B-words, the 3-byte dash split between two words.
    part1 = "Über den Drucker ".encode() + EN_DASH.encode()[:1]
    part2 = EN_DASH.encode()[1:] + b" "
    koi8 = quopri.encodestring("ошибка ".encode("koi8_r"), header=True).decode()
    jis = base64.b64encode("「故障」".encode("iso2022_jp")).decode()
    subject = (
        f"=?UTF-8?B?{base64.b64encode(part1).decode()}?=\r\n"
        f" =?utf-8?b?{base64.b64encode(part2).decode()}?= "
        f"=?koi8-r?q?{koi8}?= =?ISO-2022-JP?B?{jis}?="
    )
    headers = envelope(
        subject=subject,
        message_id=message_id,
        from_="=?utf-8?q?J=C3=B6rg_M=C3=BCller=2C_Support?= <JOERG@Example.DE>",
    )
    headers += [("Content-Type", "text/plain; charset=utf-8")]
    return build(headers, b"Encoded headers.\n")


def raw_8bit_headers(*, message_id: str | None = None) -> bytes:
    """Subject and From display name as raw (unencoded) UTF-8 bytes."""
    headers = envelope(
        subject="Grüße, ошибка & 故障".encode(),
        message_id=message_id,
        from_="Jörg Müller <joerg@example.de>".encode(),
    )
    headers += [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return build(headers, "Körper.\n".encode())


def no_message_id() -> bytes:
    """A plain message without a Message-ID header."""
    headers = envelope(subject="No Message-ID", message_id=None, with_message_id=False)
    headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return build(headers, b"Where did my id go?\n")


def no_subject(*, message_id: str | None = None) -> bytes:
    """A plain message without a Subject header."""
    headers = envelope(subject=None, message_id=message_id)
    headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return build(headers, b"Subject? Never heard of it.\n")


def no_body(*, message_id: str | None = None) -> bytes:
    """Headers only, with an empty body."""
    headers = envelope(subject="Empty", message_id=message_id)
    return build(headers, b"")


def bounce(
    *,
    original_message_id: str = "<original-1@zenith.test>",
    failed_recipient: str = "nobody@example.com",
    message_id: str | None = None,
) -> bytes:
    """A multipart/report delivery status notification (RFC 3464)."""
    boundary = "dsn-" + uuid.uuid4().hex
    headers = envelope(
        subject="Undelivered Mail Returned to Sender",
        message_id=message_id,
        from_="MAILER-DAEMON@mx.example.com (Mail Delivery System)",
        extra=[("Auto-Submitted", "auto-replied"), ("Return-Path", "<>")],
    )
    headers.append(
        (
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        )
    )
    body = (
        f"--{boundary}\n"
        "Content-Description: Notification\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        "This is the mail system at host mx.example.com.\n\n"
        f"I'm sorry to have to inform you that your message could not\n"
        f"be delivered to {failed_recipient}.\n\n"
        f"--{boundary}\n"
        "Content-Description: Delivery report\n"
        "Content-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.com\n\n"
        f"Final-Recipient: rfc822; {failed_recipient}\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\n\n"
        f"--{boundary}\n"
        "Content-Description: Undelivered Message\n"
        "Content-Type: message/rfc822\n\n"
        f"From: {DEFAULT_TO}\n"
        f"To: {failed_recipient}\n"
        "Subject: Your ticket [#42]\n"
        f"Message-ID: {original_message_id}\n\n"
        "Original body that must not become the ticket text.\n\n"
        f"--{boundary}--\n"
    )
    return build(headers, body.encode("ascii"))


def auto_reply(
    *,
    subject: str = "Out of office: Printer is on fire",
    message_id: str | None = None,
    in_reply_to: str | None = None,
) -> bytes:
    """An RFC 3834 auto-reply (Auto-Submitted: auto-replied)."""
    headers = envelope(
        subject=subject,
        message_id=message_id,
        in_reply_to=in_reply_to,
        extra=[("Auto-Submitted", "auto-replied"), ("X-Autoreply", "yes")],
    )
    headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return build(headers, b"I am out of the office until Monday.\n")


def tagged(ticket_id: int = 42, *, message_id: str | None = None) -> bytes:
    """A message whose subject carries a [#ticket_id] tag."""
    return plain(
        f"Re: [#{ticket_id}] Printer is on fire",
        "Any news?\n",
        message_id=message_id,
    )


SAMPLE_BUILDERS: dict[str, Callable[[], bytes]] = {
    "plain": plain,
    "html_only": html_only,
    "alternative": alternative,
    "with_attachments": with_attachments,
    "latin1": latin1,
    "koi8r": koi8r,
    "shift_jis": shift_jis,
    "ascii_declared_utf8_body": ascii_declared_utf8_body,
    "ascii_declared_latin1_body": ascii_declared_latin1_body,
    "unknown_charset": unknown_charset,
    "broken_utf8": broken_utf8,
    "encoded_subject": encoded_subject,
    "raw_8bit_headers": raw_8bit_headers,
    "no_message_id": no_message_id,
    "no_subject": no_subject,
    "no_body": no_body,
    "bounce": bounce,
    "auto_reply": auto_reply,
    "tagged": tagged,
}


def all_samples() -> dict[str, bytes]:
    """Return every sample, freshly built (unique Message-IDs), keyed by name."""
    return {name: builder() for name, builder in SAMPLE_BUILDERS.items()}
