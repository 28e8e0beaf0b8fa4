"""Alert messages by e-mail, through Django's mail backend (EMAIL_URL)."""

from __future__ import annotations

import smtplib
from typing import TYPE_CHECKING

from django.core.mail import send_mail

from alerts.channels import AlertSendError

if TYPE_CHECKING:
    from alerts.models import AlertDelivery


def send(*, delivery: AlertDelivery) -> None:
    """Mail the message to the delivery's recipients (comma-separated in `target`)."""
    recipients = [address.strip() for address in delivery.target.split(",") if address.strip()]
    try:
        send_mail(delivery.subject, delivery.text, None, recipients, fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        raise AlertSendError(f"recipients refused: {exc.recipients}", transient=False) from exc
    except smtplib.SMTPResponseException as exc:
        # 4xx: the server is busy or greylisting; 5xx: it will never take this message.
        message = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
        raise AlertSendError(message, transient=400 <= exc.smtp_code < 500) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise AlertSendError(f"{type(exc).__name__}: {exc}", transient=True) from exc
