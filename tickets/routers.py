"""The router every app's API uses."""

from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Routes that answer with and without a trailing slash, as the API promises (README, "API")."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
