"""Artifacts of model versions: saved through Django's storage, verified and cached on load."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from mlmodels import training
from mlmodels.models import ModelVersion

# Loaded pipelines per worker process, keyed by version id and artifact hash. A model of the
# demo dataset takes about 75 MB in memory, so a few serving models fit a worker comfortably.
CACHE_SIZE = 4
_cache: OrderedDict[tuple[int, str], Any] = OrderedDict()
_cache_lock = threading.Lock()


class ArtifactError(ValueError):
    """A model artifact that must not be loaded: missing, altered, or of an untrusted format."""


def artifact_save(*, version: ModelVersion, data: bytes) -> None:
    """Store the serialized pipeline and record its hash and size on the version (unsaved)."""
    digest = training.sha256(data)
    name = f"v{version.version}-{digest[:12]}.skops"
    version.artifact.save(name, ContentFile(data), save=False)
    version.artifact_sha256 = digest
    version.artifact_size = len(data)


def artifact_read(*, version: ModelVersion) -> bytes:
    """The artifact's bytes, refused unless their sha256 is the one recorded at training."""
    name = version.artifact.name if version.artifact else ""
    if not name or not version.artifact_sha256:
        raise ArtifactError(f"model version {version.pk} has no stored artifact")
    try:
        with default_storage.open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"artifact {version.artifact.name} of model version {version.pk} is missing"
        ) from exc
    digest = training.sha256(data)
    if digest != version.artifact_sha256:
        raise ArtifactError(
            f"artifact {version.artifact.name} of model version {version.pk} was altered: "
            f"sha256 {digest} does not match the recorded {version.artifact_sha256}"
        )
    return data


def model_load(*, version: ModelVersion) -> Any:
    """The version's fitted pipeline: from this process's cache, or verified and deserialized."""
    key = (version.pk, version.artifact_sha256)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    data = artifact_read(version=version)
    try:
        pipeline = training.deserialize(data=data)
    except Exception as exc:
        # UntrustedArtifactError for pickles and foreign types; anything else is a broken file.
        raise ArtifactError(
            f"artifact {version.artifact.name} of model version {version.pk} refused: {exc}"
        ) from exc
    cache_put(version=version, pipeline=pipeline)
    return pipeline


def cache_put(*, version: ModelVersion, pipeline: Any) -> None:
    """Remember a pipeline this process already holds (e.g. the one it just trained)."""
    with _cache_lock:
        _cache[(version.pk, version.artifact_sha256)] = pipeline
        _cache.move_to_end((version.pk, version.artifact_sha256))
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def cache_clear() -> None:
    """Forget every loaded pipeline (tests, and after an artifact is found altered)."""
    with _cache_lock:
        _cache.clear()


def cache_forget(*, version_id: int) -> None:
    with _cache_lock:
        for key in [key for key in _cache if key[0] == version_id]:
            del _cache[key]
