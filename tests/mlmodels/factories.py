"""factory_boy factories for trained model versions and their predictions."""

from __future__ import annotations

import factory

from mlmodels.models import ModelStatus, ModelVersion, Prediction, Target
from tests.tickets.factories import OrganizationFactory, TicketFactory


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A category model version; versions count up per factory use (unique per org/target)."""

    class Meta:
        model = ModelVersion

    organization = factory.SubFactory(OrganizationFactory)
    target = Target.CATEGORY
    version = factory.Sequence(lambda n: n + 1)
    status = ModelStatus.READY


class PredictionFactory(factory.django.DjangoModelFactory):
    """A prediction of a version for a ticket of the same organization."""

    class Meta:
        model = Prediction

    model_version = factory.SubFactory(ModelVersionFactory)
    ticket = factory.SubFactory(
        TicketFactory, organization=factory.SelfAttribute("..model_version.organization")
    )
    target = factory.SelfAttribute("model_version.target")
    label = "hardware"
    confidence = 0.9
