"""Live accuracy per version: reviewed and changed predictions, read from people's changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mlmodels import selectors
from mlmodels.models import Prediction
from tests.mlmodels.factories import ModelVersionFactory, PredictionFactory
from tests.tickets.factories import OrganizationFactory, UserFactory
from tickets.models import LabelChange

pytestmark = pytest.mark.django_db


def _change(prediction, *, to: str, by, minutes_after: int = 5) -> None:
    change = LabelChange.objects.create(
        ticket=prediction.ticket, field=prediction.target, new_value=to, changed_by=by
    )
    # changed_at is set on insert; place it relative to the prediction.
    LabelChange.objects.filter(pk=change.pk).update(
        changed_at=prediction.created_at + timedelta(minutes=minutes_after)
    )


@pytest.mark.parametrize("lateral", [True, False], ids=["lateral", "join"])
def test_each_version_counts_only_what_people_reviewed_after_it_predicted(lateral: bool) -> None:
    person = UserFactory()
    ours, theirs = OrganizationFactory(), OrganizationFactory()
    version = ModelVersionFactory(organization=ours, metrics={"accuracy": 0.9})
    other = ModelVersionFactory(organization=theirs, metrics={"accuracy": 0.8})
    accepted, corrected, twice, bulk, before, unapplied, _untouched = (
        PredictionFactory(model_version=version, applied=True, label="hardware") for _ in range(7)
    )
    Prediction.objects.filter(pk=unapplied.pk).update(applied=False)
    _change(accepted, to="hardware", by=person)
    _change(corrected, to="network", by=person)
    _change(twice, to="network", by=person)  # corrected, then set back: still changed once
    _change(twice, to="hardware", by=person, minutes_after=10)
    _change(bulk, to="network", by=None)  # a bulk relabel is nobody's review
    _change(before, to="network", by=person, minutes_after=-60)  # before it predicted
    _change(unapplied, to="network", by=person)
    theirs_prediction = PredictionFactory(model_version=other, applied=True, label="a")
    _change(theirs_prediction, to="b", by=person)

    live = selectors.model_version_live_accuracy(versions=[version, other], lateral=lateral)

    assert live[version.pk] == {
        "reviewed": 3,
        "changed": 2,
        "live_accuracy": round(1 - 2 / 3, 4),
        "offline_accuracy": 0.9,
    }
    assert (live[other.pk]["reviewed"], live[other.pk]["changed"]) == (1, 1)
    assert live[other.pk]["live_accuracy"] == 0.0
    alone = selectors.model_version_live_accuracy(versions=[version], lateral=lateral)
    assert set(alone) == {version.pk}
    assert alone[version.pk]["reviewed"] == 3


def test_a_version_nobody_reviewed_has_no_live_accuracy() -> None:
    version = ModelVersionFactory(metrics={"accuracy": 0.85})
    PredictionFactory(model_version=version, applied=True)

    live = selectors.model_version_live_accuracy(versions=[version])[version.pk]

    assert (live["reviewed"], live["changed"], live["live_accuracy"]) == (0, 0, None)
    assert live["offline_accuracy"] == 0.85


def test_only_the_last_days_reviews_count(settings) -> None:
    """Live accuracy is how the model does now: old reviews fall out of the window."""
    settings.ZENITH_ML_LIVE_ACCURACY_DAYS = 30
    person = UserFactory()
    version = ModelVersionFactory(metrics={"accuracy": 0.9})
    old, recent = (
        PredictionFactory(model_version=version, applied=True, label="hardware") for _ in range(2)
    )
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=45))
    old.refresh_from_db()
    _change(old, to="network", by=person, minutes_after=60)  # 45 days ago: outside
    _change(recent, to="hardware", by=person)

    live = selectors.model_version_live_accuracy(versions=[version])[version.pk]
    assert (live["reviewed"], live["changed"], live["live_accuracy"]) == (1, 0, 1.0)

    settings.ZENITH_ML_LIVE_ACCURACY_DAYS = 60
    wider = selectors.model_version_live_accuracy(versions=[version])[version.pk]
    assert (wider["reviewed"], wider["changed"], wider["live_accuracy"]) == (2, 1, 0.5)
