from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "integrations"
    verbose_name = "Integrations"

    def ready(self) -> None:
        from integrations.email import output as email_output
        from integrations.email.services.raw import raw_mail_prune
        from integrations.slack import output as slack_output
        from taskops.services import cleanup_register
        from tickets.serializers import ticket_output_extensions, ticket_output_prefetches

        # The hourly cleanup deletes original e-mails past ZENITH_RAW_MAIL_RETENTION_DAYS.
        cleanup_register("raw_mail", raw_mail_prune)

        # Each provider adds what its tickets show (Slack origin and edits; the e-mail's
        # Message-ID, sender and attachments) to the core ticket API, which knows none of them.
        for provider in (slack_output, email_output):
            if provider.ticket_output not in ticket_output_extensions:
                ticket_output_extensions.append(provider.ticket_output)
                ticket_output_prefetches.extend(provider.OUTPUT_PREFETCHES)
