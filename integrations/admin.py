"""Admin of every integration: each provider registers its own pages."""

from integrations.email import admin as email_admin
from integrations.slack import admin as slack_admin

__all__ = ["email_admin", "slack_admin"]
