"""Top-level URLs: admin, the versioned API, its schema and docs, metrics."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from taskops.metrics import metrics_view
from zenith.api import APIRootView

api_patterns = [
    path("", APIRootView.as_view(), name="api-root"),
    path("", include("tickets.urls")),
    path("", include("taskops.urls")),
    path("", include("mlmodels.urls")),
    path("", include("integrations.urls")),
    path("", include("alerts.urls")),
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_patterns)),
    path("api-auth/", include("rest_framework.urls")),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
]
