"""What every part of the model services shares: task names, limits, the progress callback."""

from __future__ import annotations

from django.conf import settings

from mlmodels import training
from taskops.progress import ProgressCallback, no_progress
from tickets.models import LabelSource

MIN_TOTAL_LABELS = 30
MIN_CLASSES = 2
# Classes with this many labels are learned, not dropped (ZENITH_ML_MIN_CLASS_EXAMPLES): the
# readiness gate and the model agree.
MIN_PER_CLASS = settings.ZENITH_ML_MIN_CLASS_EXAMPLES
DEFAULT_PARAMS = training.TrainingParams(min_class_examples=MIN_PER_CLASS)


def default_params() -> training.TrainingParams:
    """Training parameters from the current settings (ZENITH_ML_MIN_CLASS_EXAMPLES)."""
    return training.TrainingParams(min_class_examples=settings.ZENITH_ML_MIN_CLASS_EXAMPLES)


TRAIN_STEPS = 4
MACHINE_LABEL_SOURCES = ("", LabelSource.MODEL)

CLASSIFY_TASK = "mlmodels.tasks.classify_ticket_task"
BATCH_CLASSIFY_TASK = "mlmodels.tasks.batch_classify_tickets_task"
TRAIN_TASK = "mlmodels.tasks.train_organization_model_task"
TRAIN_ALL_TASK = "mlmodels.tasks.train_all_organizations_task"

# The one progress-callback type (taskops.progress), under the name callers here know.
Progress = ProgressCallback


class ModelStateError(Exception):
    """The version cannot make this transition (e.g. activating one that failed to train)."""


__all__ = ["ModelStateError", "Progress", "default_params", "no_progress"]
