"""Inference backends: every fp32 path is exact under tiling; caches are paid once."""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import pytest
import torch

from napari_unet import export, inference
from napari_unet.agreement import inference_check
from napari_unet.inference import (
    bf16_supported,
    cache_onnx,
    make_backend,
    model_digest,
)
from napari_unet.models import UNet
from napari_unet.tiling import _mirror_pad, predict_stack, predict_tiled

needs_ort = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript")),
    reason="needs the export extra (onnx, onnxscript, onnxruntime)",
)
needs_bf16 = pytest.mark.skipif(
    not bf16_supported("cpu"), reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)"
)


@pytest.fixture(scope="module")
def valid_net() -> UNet:
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, dropout=0.0).eval()


@pytest.fixture(scope="module")
def same_net() -> UNet:
    torch.manual_seed(1)
    return UNet(depth=2, base_channels=4, num_classes=3, padding="same", dropout=0.0).eval()


def whole_image(net: UNet, image: np.ndarray) -> np.ndarray:
    """One forward pass over the whole mirror-padded image (valid padding)."""
    size = image.shape
    halo = net.halo[0]
    shape = net.valid_input_shape(size)
    pads = [(halo, n - s - halo) for n, s in zip(shape, size, strict=True)]
    padded = _mirror_pad(image[None].astype(np.float32), pads)
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(padded))[None])
    return torch.softmax(logits, 1)[0, :, : size[0], : size[1]].numpy()


@pytest.mark.parametrize(
    "backend", ["eager", pytest.param("onnxruntime", marks=[needs_ort, pytest.mark.slow])]
)
def test_every_fp32_backend_tiles_exactly(valid_net, backend):
    image = np.random.default_rng(3).normal(size=(101, 77)).astype(np.float32)
    tiled = predict_tiled(valid_net, image, tile_shape=(52, 52), batch_size=2, backend=backend)
    np.testing.assert_allclose(tiled, whole_image(valid_net, image), atol=1e-5, rtol=0)


@pytest.mark.slow
@needs_ort
def test_onnxruntime_same_padding_equals_eager_labels(same_net):
    image = np.random.default_rng(4).normal(size=(90, 70)).astype(np.float32)
    eager = predict_tiled(same_net, image, tile_shape=(64, 64), backend="eager")
    ort = predict_tiled(same_net, image, tile_shape=(64, 64), backend="onnxruntime")
    assert np.abs(ort - eager).max() < 1e-5
    assert np.array_equal(ort.argmax(0), eager.argmax(0))


@pytest.mark.slow
def test_compile_is_exact_or_falls_back_to_eager():
    torch.manual_seed(2)
    valid_net = UNet(depth=1, base_channels=2, dropout=0.0).eval()
    image = np.random.default_rng(5).normal(size=(60, 60)).astype(np.float32)
    with warnings.catch_warnings():
        # Where compiling fails it warns and runs eager: exact either way.
        warnings.simplefilter("ignore", RuntimeWarning)
        got = predict_tiled(valid_net, image, tile_shape=(52, 52), backend="compile")
    np.testing.assert_allclose(got, whole_image(valid_net, image), atol=1e-5, rtol=0)


def test_compile_without_a_compiler_warns_and_runs_eager(valid_net, monkeypatch):
    monkeypatch.setattr(inference, "_compiler_available", lambda: False)
    image = np.random.default_rng(6).normal(size=(40, 40)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ compiler"):
        backend = make_backend(valid_net, backend="compile", device="cpu")
    assert backend.name == "eager"
    got = predict_tiled(valid_net, image, backend=backend)
    np.testing.assert_allclose(got, whole_image(valid_net, image), atol=1e-5, rtol=0)


@needs_bf16
def test_bf16_runs_in_reduced_precision_and_mostly_agrees(same_net):
    image = np.random.default_rng(7).normal(size=(96, 96)).astype(np.float32)
    fp32 = predict_tiled(same_net, image, backend="eager", precision="fp32")
    bf16 = predict_tiled(same_net, image, backend="eager", precision="bf16")
    diff = np.abs(bf16 - fp32).max()
    # bf16 keeps 8 mantissa bits: visibly different, but close.
    assert 1e-5 < diff < 0.1
    assert np.mean(bf16.argmax(0) == fp32.argmax(0)) > 0.95


def test_unsupported_precisions_name_the_fix(valid_net, monkeypatch):
    with pytest.raises(ValueError, match=r"fp16.*CUDA and MPS"):
        make_backend(valid_net, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="runs fp32 only"):
        make_backend(valid_net, backend="onnxruntime", precision="bf16", device="cpu")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        make_backend(valid_net, backend="tensorrt")
    monkeypatch.setattr(inference, "bf16_supported", lambda device=None: False)
    with pytest.raises(ValueError, match=r"bf16.*use precision 'fp32'"):
        make_backend(valid_net, precision="bf16", device="cpu")


def test_auto_precision_uses_bf16_only_where_the_model_recorded_agreement(valid_net, monkeypatch):
    monkeypatch.setattr(inference, "bf16_supported", lambda device=None: True)

    def meta(agreement, change):
        path = {"class_agreement": agreement, "instance_change": change}
        return {"inference_check": {"paths": {"eager/bf16": path}}}

    def chosen(metadata):
        return make_backend(valid_net, metadata=metadata, device="cpu").precision

    assert chosen(None) == "fp32"
    assert chosen(meta(0.9995, 0.004)) == "bf16"
    assert chosen(meta(0.998, 0.0)) == "fp32"
    assert chosen(meta(1.0, -0.02)) == "fp32"
    monkeypatch.setattr(inference, "bf16_supported", lambda device=None: False)
    assert chosen(meta(1.0, 0.0)) == "fp32"


def test_model_digest_follows_the_weights(valid_net):
    copy = UNet(depth=2, base_channels=4, dropout=0.0)
    copy.load_state_dict(valid_net.state_dict())
    assert model_digest(copy) == model_digest(valid_net)
    with torch.no_grad():
        next(copy.parameters()).add_(1e-3)
    assert model_digest(copy) != model_digest(valid_net)


@pytest.mark.slow
@needs_ort
def test_onnx_export_is_cached_on_disk_and_exported_once(monkeypatch, tmp_path):
    valid_net = UNet(depth=1, base_channels=2, dropout=0.0).eval()
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path))
    calls = []

    real = export.onnx._onnx_export
    monkeypatch.setattr(export.onnx, "_onnx_export", lambda *a: calls.append(1) or real(*a))
    first = cache_onnx(valid_net)
    again = cache_onnx(valid_net)
    assert first == again and first.parent.parent == tmp_path and first.stat().st_size > 0
    assert calls == [1]
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging left


@needs_ort
def test_auto_stays_eager_for_small_work_and_exports_nothing(valid_net, monkeypatch, tmp_path):
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path))
    backend = make_backend(valid_net, device="cpu")
    image = np.random.default_rng(8).normal(size=(64, 64)).astype(np.float32)
    predict_tiled(valid_net, image, backend=backend)
    assert backend.name == "eager"
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
@needs_ort
def test_auto_switches_to_onnxruntime_when_it_pays_back_and_stays_exact(
    valid_net, monkeypatch, tmp_path
):
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(inference, "_EXPORT_COST_S", 0.0)
    stack = np.random.default_rng(9).normal(size=(3, 70, 70)).astype(np.float32)
    backend = make_backend(valid_net, device="cpu")
    got = predict_stack(valid_net, stack, tile_shape=(52, 52), backend=backend)
    assert backend.name == "onnxruntime"
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    for z in range(3):
        np.testing.assert_allclose(got[:, z], whole_image(valid_net, stack[z]), atol=1e-5)
    # A later prediction finds the export in the cache and uses it from the first tile.
    assert make_backend(valid_net, device="cpu").name == "onnxruntime"


@pytest.mark.slow
@needs_ort
def test_auto_exports_once_past_small_calls_would_have_paid_for_it(monkeypatch, tmp_path):
    net = UNet(depth=1, base_channels=2, dropout=0.0).eval()
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(inference, "_EAGER_SECONDS", {})
    image = np.random.default_rng(11).normal(size=(40, 40)).astype(np.float32)
    first = make_backend(net, device="cpu")
    predict_tiled(net, image, backend=first)  # one small call: nothing to pay back
    assert first.name == "eager" and not (tmp_path / "onnx").exists()
    # As if this model had already run eager for a long while in this process.
    key = str(inference._cached_onnx_path(net))
    assert inference._EAGER_SECONDS[key] > 0
    inference._EAGER_SECONDS[key] = 10 * inference._EXPORT_COST_S
    later = make_backend(net, device="cpu")
    got = predict_tiled(net, image, backend=later)
    assert later.name == "onnxruntime"  # decided on its first batch, exported once
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    np.testing.assert_allclose(got, predict_tiled(net, image, backend="eager"), atol=1e-5)


@pytest.mark.slow
@needs_ort
def test_eager_seconds_of_earlier_processes_count_toward_the_export(monkeypatch, tmp_path):
    # One command-line process per image: each starts with an empty memory ledger.
    net = UNet(depth=1, base_channels=2, dropout=0.0).eval()
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(inference, "_EAGER_SECONDS", {})
    image = np.random.default_rng(12).normal(size=(40, 40)).astype(np.float32)
    first = make_backend(net, device="cpu")
    predict_tiled(net, image, backend=first)
    assert first.name == "eager" and not (tmp_path / "onnx").exists()
    ledger = inference._ledger_path(str(inference._cached_onnx_path(net)))
    recorded = float(ledger.read_text())
    assert recorded > 0
    # A new process: nothing in memory, the file says it ran eager long enough.
    monkeypatch.setattr(inference, "_EAGER_SECONDS", {})
    second = make_backend(net, device="cpu")
    predict_tiled(net, image, backend=second)
    assert second.name == "eager"  # this run's seconds alone do not pay for an export
    assert float(ledger.read_text()) > recorded  # they were added to the file
    ledger.write_text(f"{10 * inference._EXPORT_COST_S}\n")
    monkeypatch.setattr(inference, "_EAGER_SECONDS", {})
    third = make_backend(net, device="cpu")
    predict_tiled(net, image, backend=third)
    assert third.name == "onnxruntime"
    # A damaged ledger counts as nothing, and is not an error.
    ledger.write_text("not a number")
    assert inference._read_seconds(ledger) == 0.0


@needs_ort
def test_a_stack_announces_all_its_planes_to_the_backend(valid_net, monkeypatch, tmp_path):
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path))
    announced = []
    monkeypatch.setattr(
        inference.AutoBackend, "expect", lambda self, n: announced.append(n), raising=True
    )
    stack = np.zeros((4, 70, 70), dtype=np.float32)
    totals = []
    predict_stack(valid_net, stack, tile_shape=(52, 52), progress=lambda d, t: totals.append(t))
    # All planes' tiles, announced once before the first tile runs.
    assert announced == [totals[0]] and totals[0] % 4 == 0


@needs_ort
def test_inference_check_reports_agreement_per_path(same_net):
    image = np.random.default_rng(10).normal(size=(80, 80)).astype(np.float32)
    check = inference_check(same_net, image, paths=(("onnxruntime", "fp32"),))
    result = check["paths"]["onnxruntime/fp32"]
    assert result["class_agreement"] == 1.0
    assert result["max_abs_diff"] < 1e-5
    assert result["instance_change"] == 0.0
    assert check["reference"] == "eager/fp32" and check["image_shape"] == [80, 80]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path / "x"))
    assert inference.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(inference.CACHE_ENV)
    assert "napari-unet" in str(inference.cache_dir())
    assert os.fspath(inference.cache_dir()) != os.fspath(tmp_path / "x")


def test_predict_inside_inference_mode(valid_net):
    # A caller's own `torch.inference_mode()` (or a model built inside one, whose weights
    # are inference tensors without a version counter) must not break the model digest.
    image = np.random.default_rng(0).random((40, 40), dtype=np.float32)
    reference = predict_tiled(valid_net, image, backend="eager")
    with torch.inference_mode():
        inside = predict_tiled(valid_net, image, backend="eager")
        torch.manual_seed(0)
        built_inside = UNet(depth=2, base_channels=4, dropout=0.0).eval()
        again = predict_tiled(built_inside, image, backend="eager")
        digest = model_digest(built_inside)
    np.testing.assert_array_equal(inside, reference)
    np.testing.assert_array_equal(again, reference)
    assert digest == model_digest(valid_net)
