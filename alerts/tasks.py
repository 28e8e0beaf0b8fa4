"""Alert tasks (queue `default`).

Their names predate this app and stay as they were, so beat's schedule rows and messages
already queued keep finding them.
"""

from __future__ import annotations

from typing import Any

from alerts import services
from taskops.base import zenith_task


@zenith_task("taskops.tasks.evaluate_alert_rules")
def evaluate_alert_rules(**kwargs: Any) -> dict[str, int]:
    """Check every enabled alert rule: open or close incidents, queue their messages."""
    return services.alert_rules_evaluate()


@zenith_task("taskops.tasks.deliver_alert", bind=True)
def deliver_alert(self: Any, delivery_id: int, **kwargs: Any) -> dict[str, Any]:
    """Send one alert message (Slack or e-mail); transient failures are retried."""
    final = self.request.called_directly or self.request.retries >= self.max_retries
    delivery = services.alert_deliver(delivery_id=delivery_id, final_attempt=final)
    if delivery is None:
        return {"delivery_id": delivery_id, "state": "deleted"}
    return {"delivery_id": delivery.pk, "state": delivery.state, "attempts": delivery.attempts}
