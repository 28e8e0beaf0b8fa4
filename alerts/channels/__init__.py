"""Where alert messages can go: one module per channel, registered in AlertsConfig.ready().

A channel is a function `send(*, delivery)` that sends `delivery.text` (and its subject)
to `delivery.target`, or raises AlertSendError saying whether trying again may work. It
runs outside any transaction; the delivery service records what happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from alerts.models import AlertDelivery


class AlertSendError(Exception):
    """A message could not be sent; `transient` when trying again later may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Sender(Protocol):
    def __call__(self, *, delivery: AlertDelivery) -> None: ...


_channels: dict[str, Sender] = {}


def channel_register(*, name: str, send: Sender) -> None:
    """Make `send` the sender of channel `name` (registering again replaces it)."""
    _channels[str(name)] = send


def channel_send(*, delivery: AlertDelivery) -> None:
    """Send the delivery through its channel; an unknown channel fails it for good."""
    send = _channels.get(delivery.channel)
    if send is None:
        raise AlertSendError(f"no alert channel {delivery.channel!r} is installed", transient=False)
    send(delivery=delivery)
