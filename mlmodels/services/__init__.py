"""Writes of the model registry, one module per concern; this package re-exports their API.

- `training`: readiness, the held-out split, fitting, the artifact (`model_train`)
- `promotion`: the promotion gate, activation and roll back
- `classification`: predicting tickets with the active models
- `auto_classification`: enqueueing classification of newly created tickets
- `review`: accepting or correcting a model's label from the review queue
"""

from mlmodels.services.auto_classification import (
    BATCH_COALESCE_SECONDS,
    batch_pending_clear,
    tickets_created_classify,
)
from mlmodels.services.classification import (
    CLASSIFY_CHUNK_SIZE,
    ClassifyReport,
    ticket_classify,
    ticket_classify_by_id,
    tickets_classify,
)
from mlmodels.services.common import (
    BATCH_CLASSIFY_TASK,
    CLASSIFY_TASK,
    DEFAULT_PARAMS,
    MACHINE_LABEL_SOURCES,
    MIN_CLASSES,
    MIN_PER_CLASS,
    MIN_TOTAL_LABELS,
    TRAIN_ALL_TASK,
    TRAIN_STEPS,
    TRAIN_TASK,
    ModelStateError,
    Progress,
    default_params,
)
from mlmodels.services.promotion import (
    PROMOTION_TOLERANCE,
    model_activate,
    model_rollback,
    model_version_record_error,
    version_gate,
)
from mlmodels.services.review import ReviewError, prediction_review
from mlmodels.services.training import (
    REPEATED_METRICS,
    TrainOutcome,
    model_evaluate_repeated,
    model_train,
    organization_models_train,
    organizations_train_changed,
)

__all__ = [
    "BATCH_CLASSIFY_TASK",
    "BATCH_COALESCE_SECONDS",
    "CLASSIFY_CHUNK_SIZE",
    "CLASSIFY_TASK",
    "DEFAULT_PARAMS",
    "MACHINE_LABEL_SOURCES",
    "MIN_CLASSES",
    "MIN_PER_CLASS",
    "MIN_TOTAL_LABELS",
    "PROMOTION_TOLERANCE",
    "REPEATED_METRICS",
    "TRAIN_ALL_TASK",
    "TRAIN_STEPS",
    "TRAIN_TASK",
    "ClassifyReport",
    "ModelStateError",
    "Progress",
    "ReviewError",
    "TrainOutcome",
    "batch_pending_clear",
    "default_params",
    "model_activate",
    "model_evaluate_repeated",
    "model_rollback",
    "model_train",
    "model_version_record_error",
    "organization_models_train",
    "organizations_train_changed",
    "prediction_review",
    "ticket_classify",
    "ticket_classify_by_id",
    "tickets_classify",
    "tickets_created_classify",
    "version_gate",
]
