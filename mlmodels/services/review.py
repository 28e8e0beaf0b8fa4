"""The review queue: a person accepts or corrects a model's label; that is the next label."""

from __future__ import annotations

from typing import Any

from mlmodels import selectors
from mlmodels.models import Target
from tickets.models import Ticket
from tickets.services import ticket_update


class ReviewError(ValueError):
    """A review that names no usable label (no prediction to accept, unknown target)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def prediction_review(
    *,
    ticket: Ticket,
    target: str,
    user: Any,
    label: str | None = None,
    allow_new_label: bool = False,
) -> Ticket:
    """Accept the latest prediction for `target` (no `label`) or correct it to `label`.

    Either way the label becomes a person's (a LabelChange, the next training's label) and
    the ticket leaves the review queue. A never-used label raises tickets' LabelUnknownError
    unless `allow_new_label`.
    """
    if target not in Target.values:
        raise ReviewError(
            f"unknown target {target!r}; expected one of {', '.join(Target.values)}",
            field="target",
        )
    if label is None:
        prediction = selectors.prediction_latest_by_target(ticket=ticket).get(target)
        if prediction is None:
            raise ReviewError(
                f"ticket {ticket.pk} has no {target} prediction to accept", field="label"
            )
        label = prediction.label
    return ticket_update(
        ticket=ticket, data={target: label}, user=user, allow_new_label=allow_new_label
    )
