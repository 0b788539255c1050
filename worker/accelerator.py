"""How a loaded model runs: numeric precision and XLA compilation, set per worker.

Mixed precision computes the convolutions in 16-bit floats (GPU tensor cores) while the
weights stay 32-bit and the last layer, the softmax that yields the recorded
probabilities, stays in float32. XLA compiles the forward pass into fused kernels.
Both are measured in `bench/worker_throughput.py`. On a CPU, bfloat16 pays only where
the cores have matrix units for it (Intel AMX, Xeon 4th generation and later: about 3x
for VGG16 through TensorFlow's oneDNN kernels); elsewhere it is no faster than float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
Xla = Literal["auto", "on", "off"]

PRECISIONS: tuple[Precision, ...] = ("float32", "mixed_float16", "mixed_bfloat16")
XLA_MODES: tuple[Xla, ...] = ("auto", "on", "off")

_FUNCTIONAL = ("Functional", "Model")


def for_inference(keras_model: Any, *, precision: Precision = "float32", xla: Xla = "auto") -> Any:
    """`keras_model` set up to serve with this precision and XLA mode.

    float32 returns the model itself. A mixed policy rebuilds the same architecture with
    that dtype policy on every layer but the inputs and the final output layer, then
    copies the weights over (the saved artifact is float32 and stays so).

    `xla`: ``auto`` keeps Keras's choice (TensorFlow: XLA on a GPU, not on a CPU; JAX:
    always); ``on``/``off`` force it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if xla not in XLA_MODES:
        raise ValueError(f"xla {xla!r} is not one of {', '.join(XLA_MODES)}")
    served = keras_model if precision == "float32" else _with_policy(keras_model, precision)
    if xla != "auto":
        served.jit_compile = xla == "on"
    return served


def answer_non_finite(
    probabilities: npt.NDArray[np.float32],
    images: npt.NDArray[np.float32],
    float32_model: Any,
    *,
    rows: int | None = None,
) -> npt.NDArray[np.bool_]:
    """Give the first `rows` rows of a 16-bit model's `probabilities` (all by default)
    that are not finite the float32 model's answer instead, in place; which rows those were.

    16-bit compute can overflow (float16 tops out at 65504) or meet a compiler fault.
    The float32 model runs the whole batch, `images` as given, so a compiled model sees
    the shape it was compiled for.
    """
    count = len(probabilities) if rows is None else rows
    broken = np.asarray(~np.isfinite(probabilities[:count]).all(axis=1), dtype=np.bool_)
    if broken.any():
        fallback = np.asarray(float32_model.predict_on_batch(images), dtype=np.float32)
        probabilities[:count][broken] = fallback[:count][broken]
    return broken


def _with_policy(keras_model: Any, policy: Precision) -> Any:
    import keras

    serialized = keras.saving.serialize_keras_object(keras_model)
    _set_policy(serialized["config"], policy, keep_outputs=True)
    rebuilt = keras.saving.deserialize_keras_object(serialized)
    # Copy by variable path, not by position: VGG16 has many kernels of one shape, so a
    # different order would pass every shape check and silently scramble the model.
    source = {variable.path: variable for variable in keras_model.weights}
    target = {variable.path: variable for variable in rebuilt.weights}
    if len(source) != len(keras_model.weights) or source.keys() != target.keys():
        raise ValueError(
            f"rebuilding the model for {policy} changed its variables "
            f"({sorted(source.keys() ^ target.keys())[:4]}...); serve it in float32"
        )
    for path, variable in target.items():
        variable.assign(source[path].value)
    return rebuilt


def _set_policy(config: dict[str, Any], policy: str, *, keep_outputs: bool) -> None:
    """Give every layer of a functional model's config `policy`, in nested models too.

    With `keep_outputs`, the layers that produce the model's outputs keep theirs (recursing
    into a nested model that is an output), so the probabilities come out of a float32
    softmax rather than a 16-bit one.
    """
    outputs = {str(entry[0]) for entry in _output_entries(config.get("output_layers", []))}
    for layer in config["layers"]:
        layer_config = cast(dict[str, Any], layer["config"])
        is_output = keep_outputs and layer_config.get("name", layer.get("name")) in outputs
        if layer["class_name"] in _FUNCTIONAL and "layers" in layer_config:
            _set_policy(layer_config, policy, keep_outputs=is_output)
        elif layer["class_name"] != "InputLayer" and not is_output:
            layer_config["dtype"] = policy


def _output_entries(output_layers: Any) -> list[list[Any]]:
    """A functional config's `output_layers`: one [name, node, tensor] or a list of them."""
    if output_layers and isinstance(output_layers[0], str):
        return [cast(list[Any], output_layers)]
    return cast(list[list[Any]], output_layers)


def cpu_has_amx_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has AMX bfloat16 units (Linux; False where it cannot tell)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "amx_bf16" in line.split(":", 1)[-1].split()
    return False


def precision_advice(
    precision: Precision, *, has_gpu: bool, amx_bf16: bool, backend: str
) -> str | None:
    """A hint for the start-up log when this worker leaves a faster precision unused.

    Only on TensorFlow: its oneDNN kernels are what was measured using AMX; Keras on JAX
    gave NaN for bfloat16 on a CPU (bench/results/worker.md).
    """
    if precision == "float32" and amx_bf16 and not has_gpu and backend == "tensorflow":
        return (
            "this CPU has AMX bfloat16 units: CXR_PRECISION=mixed_bfloat16 screens about 3x "
            "faster here (measured on images the model was not trained on: probabilities "
            'within 0.002 of float32, no label changed; README, "Precision"). float32 stays '
            "the default: it is what the trainer validated the model in"
        )
    return None


def gpu_count() -> int:
    """GPUs that Keras's backend sees."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return len([d for d in jax.devices() if d.platform == "gpu"])
    return 0


def describe_devices() -> str:
    """Where Keras will run, for the worker's start-up log line."""
    import keras

    gpus = gpu_count()
    units = " (AMX-BF16)" if cpu_has_amx_bf16() else ""
    where = f"{gpus} GPU(s)" if gpus else f"CPU only{units}"
    return f"Keras {keras.__version__} on {keras.backend.backend()}, {where}"
