"""Fill Ticket.review_margin of the tickets already flagged for review.

The review queue used to compute each flagged ticket's margin at read time: the smallest
margin of its applied predictions, by active versions, below the organization's threshold.
The same value is stored once here; the classification writes it from now on.
"""

from django.db import migrations

BACKFILL = """
UPDATE tickets_ticket SET review_margin = (
    SELECT MIN(p.margin)
    FROM mlmodels_prediction p
    JOIN mlmodels_modelversion v ON v.id = p.model_version_id
    JOIN tickets_organization o ON o.id = tickets_ticket.organization_id
    WHERE p.ticket_id = tickets_ticket.id
      AND p.applied
      AND v.status = 'active'
      AND p.confidence < o.confidence_threshold
)
WHERE needs_review
"""


class Migration(migrations.Migration):
    dependencies = [
        ("mlmodels", "0002_model_selection_and_margin"),
        ("tickets", "0003_ticket_review_margin"),
    ]

    operations = [migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop)]
