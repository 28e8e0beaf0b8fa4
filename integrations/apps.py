from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "integrations"
    verbose_name = "Integrations"

    def ready(self) -> None:
        from integrations.email import output as email_output
        from integrations.slack import output as slack_output
        from tickets.serializers import ticket_output_extensions, ticket_output_prefetches

        # Each provider adds what its tickets show (Slack origin and edits; the e-mail's
        # Message-ID, sender and attachments) to the core ticket API, which knows none of them.
        for provider in (slack_output, email_output):
            if provider.ticket_output not in ticket_output_extensions:
                ticket_output_extensions.append(provider.ticket_output)
                ticket_output_prefetches.extend(provider.OUTPUT_PREFETCHES)
