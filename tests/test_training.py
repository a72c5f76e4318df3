"""The training engine: learning, reproducibility, cancel, checkpoints, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet._modelfile import load_checkpoint, load_model
from napari_unet.models import UNet
from napari_unet.normalize import Normalization, percentile_normalize
from napari_unet.progress import Progress
from napari_unet.training import (
    Sample,
    TrainConfig,
    checkpoint_paths,
    train,
    train_iter,
)


def _cells(seed: int, size: int = 64, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic image of bright discs on a dark noisy background, with instances."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(4, 8)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = i
    image = (labels > 0) * 150.0 + rng.normal(40, 10, labels.shape)
    return image.astype(np.uint16), labels


def _model(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(**{"depth": 2, "base_channels": 4, "num_classes": 3, **kwargs})


def _config(**kwargs) -> TrainConfig:
    defaults = {
        "iterations": 4,
        "tile_shape": (60, 60),  # output 20x20 for a depth-2 valid U-Net
        "lr": 0.01,
        "device": "cpu",
        "val_every": 2,
        "checkpoint_every": 2,
    }
    return TrainConfig(**{**defaults, **kwargs})


def test_tiny_tile_is_valid():
    assert _model().output_shape((60, 60)) == (20, 20)


def test_same_seed_gives_identical_weights():
    samples = [_cells(0), _cells(1)]
    results = [
        train(samples, model=_model(0), config=_config(iterations=3, seed=5)) for _ in range(2)
    ]
    for a, b in zip(
        results[0].model.state_dict().values(),
        results[1].model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert results[0].losses == results[1].losses
    other = train(samples, model=_model(0), config=_config(iterations=3, seed=6))
    assert other.losses != results[0].losses


def test_loss_decreases_on_easy_data():
    samples = [_cells(i) for i in range(3)]
    config = _config(iterations=60, optimizer="adam", lr=3e-3, elastic=False, grey_values=False)
    result = train(samples, model=_model(1), config=config)
    assert len(result.losses) == 60
    assert np.mean(result.losses[-10:]) < 0.8 * np.mean(result.losses[:10])


def test_model_files_record_the_bf16_check_that_precision_auto_reads(tmp_path):
    from napari_unet.inference import bf16_supported, default_precision

    out = tmp_path / "m.safetensors"
    train(
        [_cells(0), _cells(1)],
        model=_model(),
        config=_config(iterations=4),
        val_samples=[Sample(*_cells(2))],
        out=out,
    )
    for path in checkpoint_paths(out):
        _, meta = load_model(path)
        check = meta["inference_check"]
        assert check["reference"] == "eager/fp32" and check["image_shape"] == [1, 64, 64]
        bf16 = check["paths"]["eager/bf16"]
        if not bf16_supported("cpu"):
            assert "error" in bf16 and default_precision(meta, "cpu") == "fp32"
            continue
        assert 0.5 <= bf16["class_agreement"] <= 1.0 and bf16["instances"] >= 0
        passed = bf16["class_agreement"] >= 0.999 and abs(bf16["instance_change"]) <= 0.01
        assert default_precision(meta, "cpu") == ("bf16" if passed else "fp32")
    # Without validation there is no check image, and nothing is claimed.
    other = tmp_path / "n.safetensors"
    train([_cells(0)], model=_model(), config=_config(iterations=2), out=other)
    assert "inference_check" not in load_model(other)[1]


def test_progress_events_and_validation(tmp_path):
    events: list[Progress] = []
    out = tmp_path / "m.safetensors"
    result = train(
        [_cells(0), _cells(1)],
        model=_model(),
        config=_config(iterations=4),
        val_samples=[Sample(*_cells(2))],
        out=out,
        progress=events.append,
    )
    stages = [e.stage for e in events]
    assert stages[:3] == ["prepare"] * 3
    train_events = [e for e in events if e.stage == "train"]
    assert [e.done for e in train_events] == [1, 2, 3, 4]
    assert all(e.total == 4 for e in train_events)
    for key in ("loss", "lr", "it_per_s", "eta_s", "data_s", "step_s"):
        assert key in train_events[0].info
    assert train_events[-1].info["eta_s"] == 0
    # Validated at 2 and 4, with ISBI-style errors and a weighted loss.
    validated = [e.info for e in train_events if "val_loss" in e.info]
    assert len(validated) == 2
    assert {"pixel_error", "rand_error"} <= set(validated[0])
    assert [h["iteration"] for h in result.history] == [2, 4]
    assert result.best["iteration"] in (2, 4)
    assert result.best["value"] == min(h["val_loss"] for h in result.history)
    assert not result.cancelled and result.iterations == 4

    best, last = checkpoint_paths(out)
    assert best == out and last.name == "m.last.safetensors"
    _, meta = load_model(best)
    training = meta["training"]
    assert training["best"]["iteration"] == result.best["iteration"]
    assert training["config"]["iterations"] == 4
    assert meta["classes"] == ["background", "cell", "border"]
    assert Normalization.from_dict(meta["normalization"]).scope == "image"
    _, last_meta, optimizer_state = load_checkpoint(last)
    assert last_meta["training"]["iteration"] == 4 and last_meta["training"]["finished"]
    assert optimizer_state is not None
    # The last file holds the final weights.
    for a, b in zip(
        result.model.state_dict().values(),
        load_model(last)[0].state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_cancel_stops_within_one_iteration_and_leaves_a_loadable_model(tmp_path):
    out = tmp_path / "m.safetensors"
    done = []

    def progress(event):
        if event.stage == "train":
            done.append(event.done)

    result = train(
        [_cells(0)],
        model=_model(),
        config=_config(iterations=50, checkpoint_every=100),
        out=out,
        progress=progress,
        cancel=lambda: len(done) >= 3,
    )
    assert result.cancelled and result.iterations == 3 and done == [1, 2, 3]
    for path in checkpoint_paths(out):
        model, meta = load_model(path)
        assert meta["training"]["iteration"] == 3
        assert meta["training"]["cancelled"] and not meta["training"]["finished"]
        for a, b in zip(
            result.model.state_dict().values(), model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b)


def test_closing_the_generator_saves_the_model(tmp_path):
    """napari's Stop button closes the generator between yields."""
    out = tmp_path / "m.safetensors"
    events = train_iter(
        [_cells(0)], model=_model(), config=_config(iterations=50, checkpoint_every=100), out=out
    )
    for event in events:
        if event.stage == "train" and event.done == 2:
            break
    events.close()
    _, meta = load_model(out)
    assert meta["training"]["iteration"] == 2 and meta["training"]["cancelled"]


def test_fine_tune_and_resume_from_file(tmp_path):
    first = tmp_path / "first.safetensors"
    norm_config = _config(iterations=2, normalization="dataset")
    train([_cells(0)], model=_model(), config=norm_config, out=first)
    _, first_meta = load_model(first)
    assert first_meta["normalization"]["scope"] == "dataset"
    assert first_meta["normalization"]["lo"] is not None

    # Fine-tuning keeps the stored normalisation, starts a fresh count and records its origin.
    tuned = tmp_path / "tuned.safetensors"
    result = train([_cells(1)], model=first, config=_config(iterations=2), out=tuned)
    assert result.iterations == 2
    meta = load_model(tuned)[1]
    assert meta["normalization"] == first_meta["normalization"]
    assert meta["training"]["fine_tuned_from"]["file"] == "first.safetensors"

    # Resuming continues the count from the .last checkpoint with its optimiser state.
    _, last = checkpoint_paths(first)
    resumed = train(
        [_cells(0)],
        model=last,
        config=_config(iterations=5),
        resume=True,
        out=tmp_path / "resumed.safetensors",
    )
    assert resumed.iterations == 5 and len(resumed.losses) == 3
    with pytest.raises(ValueError, match="already has"):
        train([_cells(0)], model=last, config=_config(iterations=2), resume=True)


def test_refuses_existing_output(tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        train([_cells(0)], model=_model(), config=_config(iterations=1), out=out)
    assert out.read_bytes() == b"precious"
    train([_cells(0)], model=_model(), config=_config(iterations=1), out=out, overwrite=True)
    assert load_model(out)[1]["training"]["iteration"] == 1


def test_masks_stacks_channels_and_val_fraction():
    image, labels = _cells(0)
    mask = np.zeros(labels.shape, dtype=bool)
    mask[:32] = True
    stack = np.stack([_cells(i)[0] for i in range(3)])
    stack_labels = np.stack([_cells(i)[1] for i in range(3)])
    result = train(
        [(image, labels, mask), Sample(stack, stack_labels)],
        model=_model(),
        config=_config(iterations=2, val_fraction=0.25, seed=3),
    )
    assert result.metadata["training"]["planes"] + result.metadata["training"]["val_planes"] == 4
    assert result.metadata["training"]["val_planes"] == 1
    two_channel = np.stack([image, image // 2])
    result = train(
        [(two_channel, labels)],
        model=_model(in_channels=2, num_classes=2),
        config=_config(iterations=1, border_class=False),
    )
    assert result.iterations == 1


def test_same_padding_and_batches():
    torch.manual_seed(0)
    model = UNet(depth=2, base_channels=4, num_classes=3, padding="same", batch_norm=True)
    config = _config(iterations=2, tile_shape=(32, 32), batch_size=3, lr_schedule="cosine")
    assert train([_cells(0)], model=model, config=config).iterations == 2


def test_default_tile_is_the_paper_size_when_the_image_allows():
    from napari_unet.training import _default_tile

    paper = UNet(num_classes=3)
    assert _default_tile(paper, [(None, np.zeros((1000, 1000)))]) == (572, 572)
    small = _default_tile(paper, [(None, np.zeros((100, 120)))])
    assert paper.is_valid_input_shape(small) and paper.output_shape(small)[0] >= 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iterations": 0}, "iterations"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"monitor": "accuracy"}, "monitor"),
        ({"normalization": "zscore"}, "scope"),
        ({"norm_low": 50, "norm_high": 10}, "percentiles"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_json_round_trip():
    config = TrainConfig(tile_shape=(92, 92), optimizer="adam")
    data = config.to_dict()
    assert data["tile_shape"] == [92, 92]
    assert TrainConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({**data, "lerning_rate": 1})


@pytest.mark.parametrize(
    ("sample", "model_kwargs", "config_kwargs", "match"),
    [
        ((np.zeros((64, 64)), np.zeros((60, 60), int)), {}, {}, "does not fit labels"),
        ((np.zeros((64, 64)), np.zeros((64, 64))), {}, {}, "integer"),
        ((np.zeros((2, 64, 64)), np.zeros((64, 64), int)), {}, {}, "channel"),
        ((np.zeros((64, 64)), np.zeros((64, 64), int), np.zeros((3, 3))), {}, {}, "mask"),
        (_cells(0), {"num_classes": 2}, {}, "classes"),
        (_cells(0), {}, {"tile_shape": (61, 61)}, "nearest valid"),
        ((*_cells(0), np.zeros((64, 64), bool)), {}, {}, "no annotated pixels"),
    ],
)
def test_bad_input(sample, model_kwargs, config_kwargs, match):
    with pytest.raises(ValueError, match=match):
        train([sample], model=_model(**model_kwargs), config=_config(**config_kwargs))


def test_normalization():
    image = np.arange(10_000, dtype=np.uint16).reshape(100, 100)
    out = Normalization()(image, channel_axis=None)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(np.percentile(out, [1, 99.8]), [0, 1], atol=1e-4)
    # Channels are normalised separately, and the input is not modified.
    two = np.stack([image, image * 3]).astype(np.float64)
    copy = two.copy()
    out = Normalization()(two, channel_axis=0)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    np.testing.assert_array_equal(two, copy)
    fitted = Normalization(scope="dataset").fit([two])
    assert Normalization.from_dict(fitted.to_dict()) == fitted
    np.testing.assert_allclose(fitted(two)[1], out[1], atol=1e-4)
    assert percentile_normalize(np.full((4, 4), 7.0)).max() == 0.0  # constant: no division by 0


@pytest.mark.slow
def test_cpu_bf16_training_steps_run_in_bf16_and_learn(monkeypatch):
    from napari_unet import inference

    if not inference.bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 / AMX)")
    samples = [_cells(i) for i in range(3)]
    settings = {"iterations": 60, "optimizer": "adam", "lr": 3e-3, "elastic": False}
    fp32 = train(samples, model=_model(1), config=_config(**settings, grey_values=False))
    bf16 = train(
        samples, model=_model(1), config=_config(**settings, grey_values=False, cpu_bf16=True)
    )
    # Same data and seed: bf16 rounding makes the losses differ, but it learns as well.
    assert bf16.losses != fp32.losses
    assert np.mean(bf16.losses[-10:]) < 0.8 * np.mean(bf16.losses[:10])
    monkeypatch.setattr(inference, "bf16_supported", lambda device=None: False)
    with pytest.raises(ValueError, match="cpu_bf16"):
        train(samples, model=_model(1), config=_config(iterations=1, cpu_bf16=True))
