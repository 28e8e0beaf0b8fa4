"""Hostile and oversized mail: the corpus of tests/integrations/email/test_bombs.py.

Each builder returns raw RFC 5322 bytes. The HTML bombs are what made html2text take
seconds to minutes and emit megabytes (issue 14): deeply nested lists, nested tables, and
a large but ordinary newsletter.
"""

from __future__ import annotations

import base64
import os

from tests.support import email_samples as samples


def _html_message(subject: str, html: str, *, message_id: str | None = None) -> bytes:
    headers = samples.envelope(subject=subject, message_id=message_id or samples.make_message_id())
    headers += [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Transfer-Encoding", "base64"),
    ]
    return samples.build(headers, base64.encodebytes(html.encode("utf-8")))


def _repeat_to(unit: str, size: int) -> str:
    return unit * max(size // len(unit), 1)


def nested_lists(size: int) -> bytes:
    """``size`` bytes of ``<ol><li>`` opened inside each other and never closed."""
    return _html_message(f"Nested lists {size // 1024} KB", _repeat_to("<ol><li>item ", size))


def deep_tables(size: int) -> bytes:
    """Tables nested in table cells, ``size`` bytes of them."""
    return _html_message(
        f"Deep tables {size // 1024} KB", _repeat_to("<table><tr><td>cell<td>", size)
    )


def newsletter(size: int) -> bytes:
    """An ordinary but large marketing mail: rows of a layout table with links and images."""
    row = (
        "<tr><td class='col' style='padding:8px;font-family:Arial'>"
        "<img src='https://cdn.example.com/p.png' width='120' alt=''>"
        "<h2>Spring sale on <b>everything</b></h2>"
        "<p>Save up to 50% on laptops, monitors and <i>docking stations</i>. "
        "<a href='https://shop.example.com/sale?utm_source=mail'>Shop now</a></p>"
        "<ul><li>Free shipping</li><li>30-day returns</li></ul></td></tr>\n"
    )
    body = "<html><body><table width='100%'>" + _repeat_to(row, size) + "</table></body></html>"
    return _html_message(f"Newsletter {size // (1024 * 1024)} MB", body)


def huge(size: int) -> bytes:
    """A short text with a ``size``-byte attachment: over ZENITH_MAX_MESSAGE_BYTES."""
    boundary = "zenith-huge-boundary"
    headers = samples.envelope(
        subject="Quarterly backup (huge)", message_id=samples.make_message_id()
    )
    headers += [("Content-Type", f'multipart/mixed; boundary="{boundary}"')]
    payload = base64.encodebytes(os.urandom(size * 3 // 4))
    body = (
        (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="backup.tar"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + payload.replace(b"\n", b"\r\n")
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return samples.build(headers, body)


KB, MB = 1024, 1024 * 1024


def corpus() -> dict[str, bytes]:
    """Every bomb of the test, by name, in the order they are delivered."""
    return {
        "nested_lists_32k": nested_lists(32 * KB),
        "nested_lists_64k": nested_lists(64 * KB),
        "nested_lists_256k": nested_lists(256 * KB),
        "deep_tables_256k": deep_tables(256 * KB),
        "newsletter_5m": newsletter(5 * MB),
    }
