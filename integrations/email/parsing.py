"""Pure e-mail parsing: raw RFC 5322 bytes in, a :class:`ParsedEmail` out.

No Django and no I/O. Real-world mail is messy, so decoding never raises on
bad charsets or broken bytes (it substitutes U+FFFD); only input that is not
an e-mail message at all raises :class:`EmailParseError`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import datetime as dt
import logging
import mimetypes
import quopri
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from io import BytesIO
from typing import Any

from lxml import etree

from tickets.text import has_surrogates, storable_text

__all__ = [
    "TRUNCATED_MARKER",
    "Attachment",
    "EmailParseError",
    "ParseLimits",
    "ParseTimeout",
    "ParsedEmail",
    "decode_bytes",
    "decode_header_value",
    "html_to_text",
    "html_to_text_bounded",
    "parse_message",
]

logger = logging.getLogger(__name__)

# Labels whose text is, in practice, often really UTF-8 or windows-1252.
_WESTERN_CODECS = frozenset({"ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"})
# WHATWG-style supersets: mail labelled with the narrow charset routinely uses the wide one.
_CHARSET_ALIASES = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "tis-620": "cp874",
    "iso-8859-8-i": "iso8859-8",
    "unicode-1-1-utf-7": "utf-7",
}
# Codecs that "decode" escape syntax rather than a character set.
_REJECTED_CODECS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode"})

_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_FALSEY = frozenset({"no", "false", "0", "off"})
_TICKET_TAG_RE = re.compile(r"\[#(\d{1,18})\]")
_MSGID_RE = re.compile(r"<([^<>]*)>")
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_MAX_MIME_DEPTH = 50


class EmailParseError(ValueError):
    """Raised when input cannot be interpreted as an e-mail message at all."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Attachment:
    """A non-body MIME part (files, inline images, attached messages)."""

    filename: str
    content_type: str
    size: int
    payload: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False


@dataclass(slots=True)
class ParsedEmail:
    """The parts of a message Zenith cares about, fully decoded to str."""

    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    from_address: str
    from_name: str
    to: list[str]
    date: dt.datetime | None
    body_text: str
    attachments: list[Attachment]
    is_auto: bool
    auto_reason: str
    ticket_tag: int | None
    cc: list[str] = field(default_factory=list)
    reply_to: str = ""
    is_bounce: bool = False
    # The body was cut (HTML over max_html_chars, text over max_body_chars); it ends in
    # TRUNCATED_MARKER.
    body_truncated: bool = False

    @property
    def thread_message_ids(self) -> list[str]:
        """Message-IDs this message answers, most specific (In-Reply-To) first."""
        ids = [self.in_reply_to] if self.in_reply_to else []
        ids.extend(reversed(self.references))
        return list(dict.fromkeys(ids))


# -- charset handling ------------------------------------------------------


def _codec_name(charset: str | None) -> str | None:
    """Return Python's canonical codec name for a MIME charset label, or None if unknown."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        return None
    # Bytes-to-bytes codecs such as "base64" are not character sets.
    info = codecs.lookup(name)
    if name in _REJECTED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return name


def _try_decode(data: bytes, codec: str) -> str | None:
    """Strictly decode data, returning None instead of raising."""
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError, ValueError, TypeError):
        return None


def decode_bytes(data: bytes, charset: str | None = None, *, hint: str | None = None) -> str:
    """Decode bytes from a declared (possibly wrong or unknown) charset; never raises."""
    if not data:
        return ""
    codec = _codec_name(charset)
    if codec is None or codec in _WESTERN_CODECS:
        # Missing, unknown and ASCII/Latin labels are the usual lies: valid UTF-8
        # under such a label is real UTF-8; otherwise windows-1252 is the best bet.
        candidates = ["utf-8-sig"]
        hinted = _codec_name(hint)
        if hinted and hinted not in _WESTERN_CODECS and hinted != "utf-8":
            candidates.append(hinted)
        candidates.append("cp1252")
        for candidate in candidates:
            text = _try_decode(data, candidate)
            if text is not None:
                return text
        # Latin-1 maps every byte, so this cannot fail.
        return data.decode("latin-1")
    # utf-8-sig also drops a byte order mark, which some Windows mailers prepend.
    for candidate in ("utf-8-sig" if codec == "utf-8" else codec, "utf-8-sig"):
        text = _try_decode(data, candidate)
        if text is not None:
            return text
    # Trust the declared charset and mark only the broken bytes.
    return data.decode(codec, errors="replace")


# -- headers ---------------------------------------------------------------


def _decode_encoded_word(encoding: str, text: str) -> bytes | None:
    """Decode the payload of one RFC 2047 encoded word."""
    if encoding.lower() == "b":
        compact = "".join(text.split())
        try:
            return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
    return quopri.decodestring(text.encode("utf-8", "surrogateescape"), header=True)


def _decode_rfc2047(text: str, *, hint: str | None = None) -> str:
    """Decode RFC 2047 encoded words leniently (anywhere, any charset, broken padding)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[tuple[bytes, str | None]] = []

    def flush() -> None:
        for data, charset in pending:
            out.append(decode_bytes(data, charset, hint=hint))
        pending.clear()

    position = 0
    for match in _ENCODED_WORD_RE.finditer(text):
        between = text[position : match.start()]
        # Whitespace between adjacent encoded words is not part of the text (RFC 2047 6.2).
        if not (pending and not between.strip()):
            flush()
            out.append(between)
        position = match.end()
        decoded = _decode_encoded_word(match.group(2), match.group(3))
        if decoded is None:
            flush()
            out.append(match.group(0))
            continue
        # RFC 2231 allows "charset*language"; the language is irrelevant here.
        charset = match.group(1).split("*", 1)[0].lower()
        if pending and pending[-1][1] == charset:
            # Mailers split multibyte characters across words; join bytes before decoding.
            pending[-1] = (pending[-1][0] + decoded, charset)
        else:
            pending.append((decoded, charset))
    flush()
    out.append(text[position:])
    return "".join(out)


def _raw_to_text(value: str, *, hint: str | None = None) -> str:
    """Turn a raw header value (8-bit bytes smuggled as surrogates) into text."""
    if has_surrogates(value):
        # BytesParser keeps undecodable header bytes as surrogate escapes; recover them.
        raw = value.encode("utf-8", "surrogateescape")
        value = decode_bytes(raw, None, hint=hint)
    return _FOLD_RE.sub("", value)


def decode_header_value(value: str, *, hint: str | None = None) -> str:
    """Decode a raw header value: 8-bit bytes, RFC 2047 words, folding; never raises."""
    return storable_text(_decode_rfc2047(_raw_to_text(value, hint=hint), hint=hint))


def _raw_header(msg: Message, name: str) -> str | None:
    """Return the first raw value of header name without invoking header parsing."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def _raw_headers(msg: Message, name: str) -> list[str]:
    """Return every raw value of header name."""
    wanted = name.lower()
    return [str(value) for key, value in msg.raw_items() if key.lower() == wanted]


def _header(msg: Message, name: str, *, hint: str | None = None) -> str | None:
    """Return a decoded single-line header value, or None if absent."""
    raw = _raw_header(msg, name)
    if raw is None:
        return None
    return " ".join(decode_header_value(raw, hint=hint).split())


def _normalize_address(address: str) -> str:
    """Strip an address and lower-case its domain (the local part is case-sensitive)."""
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local}@{domain.lower()}"


_ADDR_FALLBACK_RE = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")


def _addresses(msg: Message, name: str, *, hint: str | None = None) -> list[tuple[str, str]]:
    """Return [(display name, address)] from all headers called name."""
    result: list[tuple[str, str]] = []
    for raw in _raw_headers(msg, name):
        # Decode 8-bit bytes first but RFC 2047 words only per display name, so an
        # encoded comma inside a name cannot split one address into two.
        text = storable_text(_raw_to_text(raw, hint=hint))
        found = []
        for display, address in getaddresses([text]):
            local, at, domain = address.rpartition("@")
            if at and local and domain:
                found.append((display, address))
        if not found:
            found = [("", addr) for addr in _ADDR_FALLBACK_RE.findall(text)]
        for display, address in found:
            decoded = " ".join(decode_header_value(display, hint=hint).split())
            result.append((decoded, _normalize_address(address)))
    return result


def _normalize_msgid(token: str) -> str | None:
    """Return a Message-ID in canonical '<id>' form, or None if empty."""
    inner = "".join(token.split()).strip("<>")
    return f"<{inner}>" if inner else None


def _message_id(value: str | None) -> str | None:
    """Return the normalized Message-ID from a header value."""
    if not value:
        return None
    match = _MSGID_RE.search(value)
    if match:
        return _normalize_msgid(match.group(1))
    tokens = value.split()
    return _normalize_msgid(tokens[0]) if tokens else None


def _message_id_list(value: str | None) -> list[str]:
    """Return the normalized Message-IDs in References/In-Reply-To, deduplicated in order."""
    if not value:
        return []
    tokens = _MSGID_RE.findall(value)
    if not tokens:
        # Without brackets only something with an '@' is plausibly an id, not prose.
        tokens = [token for token in value.split() if "@" in token]
    ids = (_normalize_msgid(token) for token in tokens)
    return list(dict.fromkeys(i for i in ids if i))


def _date(value: str | None) -> dt.datetime | None:
    """Parse a Date header to an aware datetime (UTC when the zone is unknown)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # "-0000" means "zone unknown"; UTC is the only sane reading.
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _token(value: str | None) -> str:
    """Return the first ';'-separated token of a header, lower-cased."""
    return (value or "").split(";", 1)[0].strip().lower()


def _auto_detection(msg: Message, content_type: str) -> tuple[bool, str, bool]:
    """Return (is_auto, reason, is_bounce) from headers and the top-level content type."""
    if content_type == "multipart/report":
        report_type = storable_text(str(msg.get_param("report-type", "") or "")).strip().lower()
        is_bounce = report_type in ("", "delivery-status")
        return True, f"multipart/report ({report_type or 'unknown report-type'})", is_bounce
    if _raw_header(msg, "X-Failed-Recipients") is not None:
        return True, "X-Failed-Recipients", True
    # Decoded values only: raw ones may carry 8-bit bytes into auto_reason.
    auto_submitted = _token(_header(msg, "Auto-Submitted"))
    if auto_submitted and auto_submitted != "no":
        return True, f"Auto-Submitted: {auto_submitted}", False
    for name in ("X-Autoreply", "X-Autorespond"):
        value = _header(msg, name)
        if value is not None and _token(value) not in _FALSEY:
            return True, f"{name}: {value}".rstrip(": "), False
    precedence = _token(_header(msg, "Precedence"))
    if precedence in _AUTO_PRECEDENCE:
        return True, f"Precedence: {precedence}", False
    return_path = _raw_header(msg, "Return-Path")
    if return_path is not None and return_path.strip() == "<>":
        # A null reverse-path is reserved for notifications (RFC 5321 4.5.5).
        return True, "Return-Path: <>", False
    return False, "", False


# -- bodies ----------------------------------------------------------------


# Markup that is never text.
_HTML_SKIP = frozenset(
    {"script", "style", "head", "title", "template", "noscript", "svg", "object"}
)
_HTML_BLOCKS = frozenset(
    {
        "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "pre",
        "section", "article", "header", "footer", "ul", "ol", "dl", "dt", "dd", "form",
        "address", "center", "main", "nav", "aside", "figure", "fieldset",
    }
)  # fmt: skip
# Nested lists indent at most this deep: indentation per level is what makes naive
# converters' output (and time) grow with the square of the input on nested lists.
_MAX_INDENT_LEVELS = 6
# libxml2's nesting limit (without XML_PARSE_HUGE): deeper elements are dropped.
_LIBXML2_MAX_DEPTH = 255
# The walk looks at the clock every this many elements.
_DEADLINE_EVERY = 512
_TAG_RE = re.compile(r"<[^<>]*>")
_SPACE_RE = re.compile(r"\s+")


class ParseTimeout(EmailParseError):
    """The message took longer than its parse budget; it is recorded, not converted."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds that keep one hostile message from stalling a mailbox.

    ``max_html_chars`` of HTML are converted to text at most, the body is cut at
    ``max_body_chars`` (with a visible marker), and parsing stops with ParseTimeout
    after ``seconds`` (None: no budget).
    """

    max_html_chars: int = 2 * 1024 * 1024
    max_body_chars: int = 100_000
    seconds: float | None = 1.5


class _Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise ParseTimeout(f"parsing took longer than {self.seconds:g} s")


class _TextWriter:
    """Collects text with Markdown-ish markup, collapsing whitespace, up to ``max_chars``."""

    def __init__(self, max_chars: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.max_chars = max_chars
        self.full = False
        self.cut = False
        self.pending_breaks = 0
        self.at_line_start = True
        self.preformatted = 0

    def text(self, value: str | None) -> None:
        if not value or self.full:
            return
        if not self.preformatted:
            value = _SPACE_RE.sub(" ", value)
            if self.at_line_start or self.pending_breaks:
                value = value.lstrip(" ")
            if not value:
                return
        self.raw(value)

    def raw(self, value: str) -> None:
        if self.full or not value:
            return
        if self.pending_breaks and self.parts:
            self._append("\n" * self.pending_breaks)
        self.pending_breaks = 0
        self._append(value)
        self.at_line_start = value.endswith("\n")

    def line_break(self, count: int = 1) -> None:
        if self.parts:
            self.pending_breaks = max(self.pending_breaks, count)
            self.at_line_start = True

    def _append(self, value: str) -> None:
        room = self.max_chars - self.size
        if len(value) >= room:
            value, self.full = value[:room], True
        self.parts.append(value)
        self.size += len(value)


def _html_walk(root: Any, writer: _TextWriter, deadline: _Deadline) -> None:
    """Write the text of an lxml tree: one pass, constant work per element."""
    lists: list[list[Any]] = []  # [tag, next number] per open ul/ol
    links: list[str] = []
    bold = italic = depth = 0
    cells: list[int] = []  # cells written in each open table row
    walker = etree.iterwalk(root, events=("start", "end"))
    for count, (event, element) in enumerate(walker):
        if count % _DEADLINE_EVERY == 0:
            deadline.check()
        if writer.full:
            return
        tag = element.tag.lower() if isinstance(element.tag, str) else ""
        if event == "start":
            depth += 1
            if depth >= _LIBXML2_MAX_DEPTH:
                # libxml2 stops building the tree here: what was nested deeper is lost.
                writer.cut = True
            if tag in _HTML_SKIP:
                walker.skip_subtree()
                continue
            if tag in _HTML_BLOCKS:
                writer.line_break(2)
            if tag == "pre":
                writer.preformatted += 1
            elif tag in ("ul", "ol"):
                lists.append([tag, 1])
            elif tag == "li":
                writer.line_break(1)
                level = min(len(lists), _MAX_INDENT_LEVELS + 1)
                indent = "  " * max(level - 1, 0)
                if lists and lists[-1][0] == "ol":
                    writer.raw(f"{indent}{lists[-1][1]}. ")
                    lists[-1][1] += 1
                else:
                    writer.raw(f"{indent}* ")
            elif tag == "br":
                writer.line_break(1)
            elif tag == "tr":
                writer.line_break(1)
                cells.append(0)
            elif tag in ("td", "th"):
                if cells:
                    if cells[-1]:
                        writer.raw(" | ")
                    cells[-1] += 1
            elif tag in ("b", "strong"):
                bold += 1
                if bold == 1:
                    writer.raw("**")
            elif tag in ("i", "em"):
                italic += 1
                if italic == 1:
                    writer.raw("_")
            elif tag == "a":
                href = (element.get("href") or "").strip()
                usable = href.startswith(("http://", "https://", "mailto:"))
                links.append(href if usable else "")
                if usable:
                    writer.raw("[")
            writer.text(element.text)
            continue
        # end
        depth -= 1
        if tag in _HTML_SKIP:
            writer.text(element.tail)
            continue
        if tag in _HTML_BLOCKS:
            writer.line_break(2)
        if tag == "pre":
            writer.preformatted = max(writer.preformatted - 1, 0)
        elif tag in ("ul", "ol") and lists:
            lists.pop()
        elif tag == "tr" and cells:
            cells.pop()
            writer.line_break(1)
        elif tag in ("b", "strong") and bold:
            bold -= 1
            if not bold:
                writer.raw("**")
        elif tag in ("i", "em") and italic:
            italic -= 1
            if not italic:
                writer.raw("_")
        elif tag == "a" and links:
            href = links.pop()
            if href:
                writer.raw(f"]({href})")
        elif tag == "li":
            writer.line_break(1)
        writer.text(element.tail)


def html_to_text_bounded(
    html: str, *, max_chars: int = 100_000, seconds: float | None = None
) -> tuple[str, bool]:
    """HTML to readable text (Markdown-ish emphasis, links and lists) in time linear in its input.

    libxml2 parses (recovering from any markup; nesting deeper than 256 is cut there) and
    one iterative walk writes at most ``max_chars`` characters. Returns (text, truncated).
    Raises ParseTimeout after ``seconds``.
    """
    deadline = _Deadline(seconds)
    writer = _TextWriter(max_chars)
    if html.strip():
        parser = etree.HTMLParser(
            encoding="utf-8",
            recover=True,
            no_network=True,
            remove_comments=True,
            remove_pis=True,
            default_doctype=False,
            collect_ids=False,
        )
        try:
            root = etree.fromstring(html.encode("utf-8", "surrogatepass"), parser)
        except (etree.LxmlError, ValueError) as exc:
            logger.debug("HTML could not be parsed (%s); stripping tags", exc)
            root = None
            writer.text(_TAG_RE.sub(" ", html))
        if root is not None:
            _html_walk(root, writer, deadline)
    return "".join(writer.parts), writer.full or writer.cut


def html_to_text(html: str) -> str:
    """Convert HTML to readable plain text (Markdown-ish links and lists)."""
    return html_to_text_bounded(html)[0]


def _normalize_body(text: str) -> str:
    """Normalize newlines, drop trailing spaces and surrounding blank lines."""
    text = storable_text(text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def _payload_bytes(part: Message) -> bytes:
    """Return the transfer-decoded payload of a leaf part."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    if isinstance(raw, list):
        # message/* parts hold parsed sub-messages; serialize them back.
        return b"".join(_serialize(sub) for sub in raw if isinstance(sub, Message))
    return b""


def _serialize(msg: Message) -> bytes:
    """Serialize a sub-message as faithfully as the stdlib allows."""
    buffer = BytesIO()
    try:
        # compat32 writes headers back as received instead of refolding them.
        BytesGenerator(buffer, mangle_from_=False, policy=policy.compat32).flatten(msg)
    except Exception as exc:  # fall back to str() for odd sub-messages
        logger.debug("could not serialize attached message: %s", exc)
        return str(msg).encode("utf-8", "surrogateescape")
    return buffer.getvalue()


def _part_text(part: Message) -> str:
    """Decode a text/* part to str using its (possibly lying) charset."""
    data = _payload_bytes(part)
    charset = part.get_content_charset()
    if charset is None and part.get_content_type() == "text/html":
        match = _META_CHARSET_RE.search(data[:4096])
        if match:
            charset = match.group(1).decode("ascii", "replace")
    return decode_bytes(data, charset)


def _leaves(part: Message, depth: int = 0) -> Iterator[Message]:
    """Yield leaf parts; attached messages are leaves, not descended into."""
    if depth > _MAX_MIME_DEPTH:
        return
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaves(sub, depth + 1)
    else:
        yield part


def _filename(part: Message, index: int, content_type: str) -> str:
    """Return a safe, decoded filename, inventing one when the part has none."""
    name = part.get_filename() or ""
    name = decode_header_value(str(name))
    # Only the last path component: never let a sender choose directories.
    name = re.split(r"[\\/]", name)[-1].strip().strip(".")
    name = " ".join(name.split())
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 254 - len(ext)] + dot + ext) if dot and len(ext) < 16 else name[:255]
    if name:
        return name
    if content_type.startswith("message/"):
        extension = ".eml" if content_type == "message/rfc822" else ".txt"
    else:
        extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment-{index}{extension}"


TRUNCATED_MARKER = "[… truncated by Zenith: the original message is longer]"


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def _body(
    plain_parts: list[str], html_parts: list[str], limits: ParseLimits, deadline: _Deadline
) -> tuple[str, bool]:
    """The body text, from the plain parts or else the HTML ones, within ``limits``."""
    cap = limits.max_body_chars
    # Some mailers send an empty text/plain alternative next to the real HTML.
    body, truncated = _cap("\n\n".join(text for text in plain_parts if text.strip()), cap * 2)
    if not body.strip() and html_parts:
        converted = []
        html_budget = limits.max_html_chars
        for html in html_parts:
            if html_budget <= 0:
                truncated = True
                break
            html, cut = _cap(html, html_budget)
            html_budget -= len(html)
            text, full = html_to_text_bounded(
                html,
                max_chars=cap + 1,
                seconds=None if deadline.at is None else max(deadline.at - time.monotonic(), 0),
            )
            converted.append(text)
            truncated = truncated or cut or full
        # Block elements leave runs of blank lines; one blank line is enough.
        body = re.sub(r"\n[ \t]*(?:\n[ \t]*){2,}", "\n\n", "\n\n".join(converted))
    body = _normalize_body(body)
    body, cut = _cap(body, cap)
    if truncated or cut:
        body = body.rstrip() + "\n\n" + TRUNCATED_MARKER
    return body, truncated or cut


def _extract(
    msg: Message,
    raw_size: int,
    limits: ParseLimits | None = None,
    deadline: _Deadline | None = None,
) -> ParsedEmail:
    """Build a ParsedEmail from a parsed message (works with any email policy)."""
    limits = limits or ParseLimits(seconds=None)
    deadline = deadline or _Deadline(limits.seconds)
    if not msg.keys():
        raise EmailParseError("no header fields found; not an RFC 5322 message")
    content_type = msg.get_content_type()
    # 8-bit headers are most often in the body's charset when they are not UTF-8.
    hint = msg.get_content_charset()

    plain_parts: list[str] = []
    html_parts: list[str] = []
    attachments: list[Attachment] = []
    for part in _leaves(msg):
        deadline.check()
        part_type = part.get_content_type()
        disposition = part.get_content_disposition()
        has_filename = bool(part.get_filename())
        if part.get_content_maintype() == "multipart":
            # multipart without a usable boundary: the stdlib leaves it as one text blob.
            part_type = "text/plain"
        is_body = disposition != "attachment" and not has_filename
        if is_body and part_type in ("text/plain", "text/html"):
            (plain_parts if part_type == "text/plain" else html_parts).append(_part_text(part))
            continue
        payload = _payload_bytes(part)
        content_id = _raw_header(part, "Content-ID")
        attachments.append(
            Attachment(
                filename=_filename(part, len(attachments) + 1, part_type),
                content_type=part_type,
                size=len(payload),
                payload=payload,
                content_id=_message_id(decode_header_value(content_id)) if content_id else None,
                inline=disposition == "inline",
            )
        )

    body, body_truncated = _body(plain_parts, html_parts, limits, deadline)

    from_pairs = _addresses(msg, "From", hint=hint) or _addresses(msg, "Sender", hint=hint)
    from_name, from_address = from_pairs[0] if from_pairs else ("", "")
    reply_to = _addresses(msg, "Reply-To", hint=hint)
    subject = _header(msg, "Subject", hint=hint) or ""
    is_auto, auto_reason, is_bounce = _auto_detection(msg, content_type)
    tag = _TICKET_TAG_RE.search(subject)
    in_reply_to = _message_id_list(_header(msg, "In-Reply-To"))

    logger.debug("parsed %d-byte message with %d attachments", raw_size, len(attachments))
    return ParsedEmail(
        message_id=_message_id(_header(msg, "Message-ID")),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_message_id_list(_header(msg, "References")),
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to=[address for _, address in _addresses(msg, "To", hint=hint)],
        cc=[address for _, address in _addresses(msg, "Cc", hint=hint)],
        reply_to=reply_to[0][1] if reply_to else "",
        date=_date(_header(msg, "Date")),
        body_text=body,
        body_truncated=body_truncated,
        attachments=attachments,
        is_auto=is_auto,
        auto_reason=auto_reason,
        is_bounce=is_bounce,
        ticket_tag=int(tag.group(1)) if tag else None,
    )


def parse_message(raw: bytes, limits: ParseLimits | None = None) -> ParsedEmail:
    """Parse raw message bytes within ``limits`` (default ``ParseLimits()``).

    Raises EmailParseError if it is not a message at all, ParseTimeout (a subclass) when
    it takes longer than ``limits.seconds``.
    """
    limits = limits or ParseLimits()
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise EmailParseError(f"expected bytes, got {type(raw).__name__}")
    data = bytes(raw)
    if not data.strip():
        raise EmailParseError("empty message")
    deadline = _Deadline(limits.seconds)
    failure: Exception | None = None
    with _hard_deadline(limits.seconds):
        data = _join_base64_lines(data)
        # policy.default is the modern API, but its header registry has crashed on
        # hostile input in the past; compat32 parses lazily and is a safe fallback.
        for parse_policy in (policy.default, policy.compat32):
            try:
                msg = BytesParser(policy=parse_policy).parsebytes(data)
                deadline.check()
                return _extract(msg, len(data), limits, deadline)
            except EmailParseError:
                raise
            except Exception as exc:  # any stdlib crash means "try the next policy"
                logger.debug("parsing with %s failed: %r", parse_policy, exc)
                failure = exc
    raise EmailParseError(f"message could not be parsed: {failure!r}") from failure


# Two or more consecutive lines of 60+ base64 characters (how encoders wrap attachments),
# anchored at line starts so the search stays linear.
_BASE64_RUN_RE = re.compile(rb"^(?:[A-Za-z0-9+/]{60,}\r?\n){2,}", re.MULTILINE)


def _join_base64_lines(data: bytes) -> bytes:
    """Join the wrapped lines of base64 bodies into one line each.

    The stdlib's parser spends its time per line (a 20 MB attachment is 270,000 lines and
    seconds of Python); base64 decoding ignores line breaks, so joined it reads the same
    in a fraction of the time. Prose never has such lines: no spaces, 60+ characters.
    """
    if len(data) < 1024 * 1024:
        return data
    return _BASE64_RUN_RE.sub(
        lambda match: match.group(0).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n", data
    )


@contextlib.contextmanager
def _hard_deadline(seconds: float | None) -> Iterator[None]:
    """Interrupt parsing after ``seconds`` even inside the stdlib (main thread only).

    The walk checks its deadline itself; this covers code that does not (the stdlib's
    MIME and header parsers). Signals reach only the main thread, which is where a
    Celery pool process runs its task; elsewhere the cooperative checks remain. A timer
    that was already set (pytest-timeout's) is put back with the time it had left.
    """
    if (
        seconds is None
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise ParseTimeout(f"parsing took longer than {seconds:g} s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, expire)
    # A little after the cooperative deadline, which gives the better error.
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds + 0.2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)
