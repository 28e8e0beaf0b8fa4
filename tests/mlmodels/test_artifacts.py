"""Artifacts are only loaded when their hash matches and their format cannot run code."""

from __future__ import annotations

import pickle

import pytest
from django.core.files.storage import default_storage

from mlmodels import registry, services, training
from mlmodels.models import ModelStatus
from mlmodels.registry import ArtifactError
from tests.tickets.factories import TicketFactory
from tickets.models import Role

pytestmark = pytest.mark.django_db


def _overwrite(name: str, data: bytes) -> None:
    with default_storage.open(name, "wb") as handle:
        handle.write(data)


@pytest.fixture
def trained(organization, import_sample):
    import_sample(organization, n=200)
    version = services.model_train(organization=organization, target="category").version
    registry.cache_clear()  # as in a fresh worker process
    return version


def test_a_tampered_artifact_is_refused_and_the_error_recorded(organization, trained):
    with default_storage.open(trained.artifact.name, "rb") as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0xFF
    _overwrite(trained.artifact.name, bytes(data))
    ticket = TicketFactory(organization=organization)

    with pytest.raises(ArtifactError, match=r"was altered: sha256 \w+ does not match the recorded"):
        services.ticket_classify(ticket=ticket)

    trained.refresh_from_db()
    assert "was altered" in trained.error
    assert not ticket.predictions.exists()


def test_a_pickle_artifact_is_refused_even_with_a_matching_hash(organization, trained):
    pipeline = training.fit(
        texts=["printer broken", "printer jam", "vpn down", "vpn slow"] * 3,
        labels=["a", "a", "b", "b"] * 3,
        params=training.TrainingParams(),
    )
    data = pickle.dumps(pipeline)
    _overwrite(trained.artifact.name, data)
    # Even someone who can also rewrite the recorded hash cannot make a worker unpickle.
    trained.artifact_sha256 = training.sha256(data)
    trained.save(update_fields=["artifact_sha256"])

    with pytest.raises(ArtifactError, match="pickle"):
        services.ticket_classify(ticket=TicketFactory(organization=organization))

    trained.refresh_from_db()
    assert "pickle" in trained.error


def test_a_missing_artifact_is_a_clear_error(organization, trained):
    default_storage.delete(trained.artifact.name)

    with pytest.raises(ArtifactError, match="is missing"):
        services.ticket_classify(ticket=TicketFactory(organization=organization))


def test_a_tampered_version_cannot_be_activated(organization, trained, make_user, make_api_client):
    target = services.model_train(organization=organization, target="category").version
    services.model_activate(version=trained)
    _overwrite(target.artifact.name, b"PK\x03\x04 not what was trained")
    registry.cache_clear()
    admin = make_api_client(make_user(organization=organization, role=Role.ADMIN))

    response = admin.post(f"/api/v1/models/{target.pk}/activate")

    assert response.status_code == 409
    assert "altered" in response.data["detail"]
    target.refresh_from_db()
    assert target.status != ModelStatus.ACTIVE


def test_loaded_models_are_cached_per_version(organization, trained):
    first = registry.model_load(version=trained)
    # Once loaded, the worker serves from memory (the file was verified when it was read).
    assert registry.model_load(version=trained) is first
