"""Mixed precision and XLA options applied to a loaded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tiny_model import save_tiny_model
from trainer.backbones import get_backbone
from trainer.model import build_classifier
from worker.accelerator import cpu_has_amx_bf16, for_inference, precision_advice


def _leaf_policies(model: Any) -> dict[str, str]:
    """Layer name -> dtype policy name, through nested models."""
    found: dict[str, str] = {}
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found.update(_leaf_policies(layer))
        else:
            found[layer.name] = layer.dtype_policy.name
    return found


@pytest.fixture(scope="module")
def nested_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The production architecture (nested VGG16 base and head), small input, loaded back
    from disk as the worker does."""
    import keras

    classifier = build_classifier(get_backbone("vgg16"), size=32, n_classes=2, weights=None, seed=0)
    path = tmp_path_factory.mktemp("nested") / "model.keras"
    classifier.model.save(path)
    return keras.models.load_model(path, compile=False)


def _pixels(size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype(np.float32)


def test_float32_serves_the_model_itself(nested_model: Any) -> None:
    assert for_inference(nested_model) is nested_model


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_policy_reaches_nested_layers_and_keeps_a_float32_softmax(
    nested_model: Any, policy: str
) -> None:
    served = for_inference(nested_model, precision=policy)  # type: ignore[arg-type]
    policies = _leaf_policies(served)
    assert policies["probabilities"] == "float32"
    assert policies["block1_conv1"] == policy
    assert policies["block5_conv3"] == policy
    assert policies["preprocess"] == policy
    # The artifact's own model is untouched; the copy has the same float32 weights.
    assert _leaf_policies(nested_model)["block1_conv1"] == "float32"
    copies = {variable.path: variable for variable in served.weights}
    assert len(copies) == len(nested_model.weights)
    for original in nested_model.weights:
        copied = copies[original.path]
        assert copied.dtype == "float32"
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copied))

    expected = nested_model.predict_on_batch(_pixels(32))
    got = served.predict_on_batch(_pixels(32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    # 16-bit compute moves a probability by about 1e-3 here, never by a whole class.
    assert np.abs(got - expected).max() < 0.02


def test_flat_model_keeps_its_output_layer_float32(tmp_path: Path) -> None:
    import keras

    path = tmp_path / "tiny.keras"
    save_tiny_model(path)
    model = keras.models.load_model(path, compile=False)
    served = for_inference(model, precision="mixed_bfloat16")
    assert served.layers[-1].dtype_policy.name == "float32"
    assert served.layers[2].dtype_policy.name == "mixed_bfloat16"


@pytest.mark.parametrize(("xla", "expected"), [("on", True), ("off", False)])
def test_xla_mode_is_forced_when_asked(nested_model: Any, xla: str, expected: bool) -> None:
    served = for_inference(nested_model, precision="mixed_float16", xla=xla)  # type: ignore[arg-type]
    assert served.jit_compile is expected


def test_unknown_options_are_refused(nested_model: Any) -> None:
    with pytest.raises(ValueError, match="precision 'float8'"):
        for_inference(nested_model, precision="float8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="xla 'maybe'"):
        for_inference(nested_model, xla="maybe")  # type: ignore[arg-type]


def test_amx_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n"
        "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    )
    assert cpu_has_amx_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert not cpu_has_amx_bf16(cpuinfo)  # bf16 instructions without the matrix units
    assert not cpu_has_amx_bf16(tmp_path / "missing")


def test_the_precision_hint_is_given_only_where_bfloat16_would_pay() -> None:
    tf = "tensorflow"
    hint = precision_advice("float32", has_gpu=False, amx_bf16=True, backend=tf)
    assert hint is not None
    assert "CXR_PRECISION=mixed_bfloat16" in hint
    assert precision_advice("mixed_bfloat16", has_gpu=False, amx_bf16=True, backend=tf) is None
    assert precision_advice("float32", has_gpu=False, amx_bf16=False, backend=tf) is None
    # On a GPU worker the model runs there: the CPU's units do not matter.
    assert precision_advice("float32", has_gpu=True, amx_bf16=True, backend=tf) is None
    # Measured on TensorFlow's oneDNN kernels only; JAX's CPU bfloat16 gave NaN.
    assert precision_advice("float32", has_gpu=False, amx_bf16=True, backend="jax") is None
