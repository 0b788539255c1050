"""One way from a file to a verdict, for every caller: prepare, predict, interpret.

- `prepare`: a file's bytes -> the model input and header facts, decoded by the one draft
  rule derived from the model's input size (`ModelInput`), which also names the
  feature-cache key of that input;
- `predict`: a checksum-verified artifact served with padding and the precision fallback
  (`load_verified`, `Predictor`);
- `interpret`: probabilities -> verdicts at the model's operating threshold;
- `explain`: Grad-CAM heatmaps at the last convolutional map found in the artifact.

The screening worker, `cxr-screen screen`, the trainer's feature extraction and its
evaluation all go through these stages, so what a model is trained on, evaluated on and
serves is the same input for the same bytes. The package depends on the decoder, the
accelerator settings and `worker.confined` only: no database, no settings, no Celery.
"""

from worker.pipeline.digest import file_sha256
from worker.pipeline.interpret import OperatingPoint, Verdict, interpret
from worker.pipeline.predict import (
    ModelUnavailableError,
    NonFiniteOutputError,
    Predictor,
    load_verified,
    padded_size,
    predict_prepared,
)
from worker.pipeline.prepare import (
    ModelInput,
    Prepared,
    header_columns,
    prepare_bytes,
    prepare_file,
)

__all__ = [
    "ModelInput",
    "ModelUnavailableError",
    "NonFiniteOutputError",
    "OperatingPoint",
    "Predictor",
    "Prepared",
    "Verdict",
    "file_sha256",
    "header_columns",
    "interpret",
    "load_verified",
    "padded_size",
    "predict_prepared",
    "prepare_bytes",
    "prepare_file",
]
