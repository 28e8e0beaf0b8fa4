"""Requesters: users.info, cached in SlackUserProfile."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta

import structlog
from django.utils import timezone
from slack_sdk import WebClient

from integrations.models import (
    SlackUserProfile,
    SlackWorkspace,
)
from integrations.slack.client import (
    SlackClientError,
    user_info,
)
from integrations.transactions import atomic_async_commit

logger = structlog.get_logger(__name__)
USER_CACHE_TTL = timedelta(hours=24)


_PROFILE_FIELDS = ("name", "real_name", "email", "is_bot", "found", "fetched_at")


class RequesterResolver:
    """Turns Slack user ids into requester text, one ``users.info`` call per user per day.

    With ``strict`` a Slack error propagates (the sync retries later); without it the
    user id stands in, so an event never waits on a profile.
    """

    def __init__(
        self, *, workspace: SlackWorkspace, client: Callable[[], WebClient], strict: bool
    ) -> None:
        self.workspace = workspace
        self._client = client
        self.strict = strict
        self._known: dict[str, str] = {}

    def resolve(self, user_ids: Iterable[str]) -> dict[str, str]:
        wanted = {uid for uid in user_ids if uid}
        missing = wanted - set(self._known)
        if missing:
            fresh_since = timezone.now() - USER_CACHE_TTL
            stored = {
                profile.user_id: profile
                for profile in SlackUserProfile.objects.filter(
                    team_id=self.workspace.team_id, user_id__in=missing
                )
            }
            for uid, profile in stored.items():
                if profile.fetched_at >= fresh_since:
                    self._known[uid] = profile.display
            fetched: list[SlackUserProfile] = []
            try:
                for uid in sorted(missing - set(self._known)):
                    current = self._fetch(uid, stored=stored.get(uid))
                    self._known[uid] = current.display if current is not None else uid
                    if current is not None:
                        fetched.append(current)
            finally:
                # Also when Slack fails half-way: a retry then fetches only the rest.
                self._save(fetched)
        return {uid: self._known.get(uid, uid) for uid in wanted}

    def _fetch(self, user_id: str, *, stored: SlackUserProfile | None) -> SlackUserProfile | None:
        """The profile as Slack has it now (not saved yet); None when the lookup failed.

        A user Slack no longer finds keeps the names ``stored`` knows.
        """
        try:
            user = user_info(client=self._client(), user_id=user_id)
        except SlackClientError:
            if self.strict:
                raise
            logger.warning("slack_user_lookup_failed", user_id=user_id, exc_info=True)
            return None
        profile = SlackUserProfile(
            team_id=self.workspace.team_id,
            user_id=user_id,
            fetched_at=timezone.now(),
            found=user is not None,
        )
        if user is not None:
            profile.name = user.name[:255]
            profile.real_name = user.real_name[:255]
            profile.email = (user.email or "")[:255]
            profile.is_bot = user.is_bot
        elif stored is not None:
            for name in ("name", "real_name", "email", "is_bot"):
                setattr(profile, name, getattr(stored, name))
        return profile

    def _save(self, profiles: list[SlackUserProfile]) -> None:
        """Upsert fetched profiles at once; a user no longer found keeps the names known."""
        if not profiles:
            return
        # A cache: an asynchronous commit is enough (a lost row is fetched again).
        with atomic_async_commit():
            for found, fields in ((True, _PROFILE_FIELDS), (False, ("found", "fetched_at"))):
                rows = [profile for profile in profiles if profile.found is found]
                if rows:
                    SlackUserProfile.objects.bulk_create(
                        rows,
                        update_conflicts=True,
                        unique_fields=["team_id", "user_id"],
                        update_fields=list(fields),
                    )
