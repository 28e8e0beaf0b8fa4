from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "integrations"
    verbose_name = "Integrations"

    def ready(self) -> None:
        from integrations.slack_output import slack_ticket_output
        from tickets.serializers import ticket_output_extensions, ticket_output_prefetches

        # Slack tickets show where they came from, their edits and whether Slack deleted them.
        if slack_ticket_output not in ticket_output_extensions:
            ticket_output_extensions.append(slack_ticket_output)
            ticket_output_prefetches.append("slack_origin")

        # --- E-mail --- tickets show their Message-ID, sender and attachments.
        from integrations.email_output import EMAIL_OUTPUT_PREFETCHES, email_ticket_output

        if email_ticket_output not in ticket_output_extensions:
            ticket_output_extensions.append(email_ticket_output)
            ticket_output_prefetches.extend(EMAIL_OUTPUT_PREFETCHES)
