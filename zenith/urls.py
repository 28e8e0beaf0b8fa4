"""Top-level URLs: admin, the versioned API, its schema and docs, metrics."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from alerts import urls as alerts_urls
from integrations import urls as integrations_urls
from mlmodels import urls as mlmodels_urls
from taskops import urls as taskops_urls
from taskops.metrics import metrics_view
from tickets import urls as tickets_urls
from zenith.api import APIRootView

API_APPS = (tickets_urls, taskops_urls, mlmodels_urls, integrations_urls, alerts_urls)

api_root = APIRootView.as_view(
    routers=tuple(app.router for app in API_APPS),
    extra_entries={
        "tasks-active": "tasks/active/",
        "tasks-health": "tasks/health/",
        "schema": "schema/",
        "docs": "docs/",
    },
)

api_patterns = [
    path("", api_root, name="api-root"),
    *(path("", include(app)) for app in API_APPS),
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/api/v1/", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_patterns)),
    path("api-auth/", include("rest_framework.urls")),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
]
