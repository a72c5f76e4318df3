"""Training defaults in one place: presets, validation cadence, the network and resuming."""

from __future__ import annotations

import pytest

from napari_unet.errors import UsageError
from napari_unet.io import save_model
from napari_unet.models import UNet, UNetPlusPlus
from napari_unet.train_settings import (
    ModelSpec,
    default_val_every,
    make_run,
    resume_state,
    training_preset,
)


def test_presets_fill_only_what_is_not_given():
    gpu, _ = make_run(preset="gpu")
    cpu, _ = make_run(preset="cpu")
    assert (gpu.depth, gpu.base_channels) == (4, 64)  # the paper
    assert (cpu.depth, cpu.base_channels) == (3, 16)  # the demo's network
    _, gpu_config = make_run(preset="gpu")
    _, cpu_config = make_run(preset="cpu")
    assert gpu_config.tile_shape is None and gpu_config.optimizer == "sgd"
    assert gpu_config.iterations == 1000
    assert cpu_config.tile_shape == (124, 124) and cpu_config.optimizer == "adam"
    assert cpu_config.iterations == 300
    # U-Net++ (same padding) takes multiples of 2**depth: the preset's tile is rounded up.
    _, plus = make_run(preset="cpu", architecture="unetplusplus")
    assert plus.tile_shape == (128, 128)
    _, given = make_run(preset="cpu", architecture="unetplusplus", tile=96)
    assert given.tile_shape == (96, 96)
    mine, _ = make_run(preset="cpu", base_channels=8, depth=2)
    assert (mine.depth, mine.base_channels) == (2, 8)
    with pytest.raises(UsageError, match="unknown preset"):
        training_preset("tpu")


def test_validation_and_checkpoints_follow_one_rule():
    assert [default_val_every(n) for n in (1, 5, 30, 1000, 10**6)] == [1, 1, 3, 100, 100]
    _, config = make_run(iterations=40)
    assert config.val_every == config.checkpoint_every == 4
    _, config = make_run(iterations=40, val_every=7)
    assert config.val_every == config.checkpoint_every == 7
    _, config = make_run(classes=2, augment=False)
    assert not config.border_class and not config.elastic and not config.flips


def test_spec_builds_the_network_reproducibly():
    spec = ModelSpec(in_channels=2, num_classes=2, depth=1, base_channels=4, padding="same")
    a, b = spec.build(seed=3), spec.build(seed=3)
    assert isinstance(a, UNet) and a.in_channels == 2 and a.padding == "same"
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    plus = ModelSpec(architecture="unetplusplus", depth=2, base_channels=4).build()
    assert isinstance(plus, UNetPlusPlus)
    assert "padding" not in ModelSpec(architecture="unetplusplus").arguments()
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelSpec(architecture="transformer").build()


def test_a_finished_model_is_fine_tuned_not_resumed(tmp_path):
    path = save_model(UNet(depth=1, base_channels=2), tmp_path / "m.safetensors")
    state = resume_state(path)
    assert not state.resume and state.iteration is None
