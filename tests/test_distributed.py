"""Data-parallel training: 2 Gloo processes on the CPU equal one process with the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
import torch

from napari_unet._modelfile import load_model
from napari_unet.models import UNet
from napari_unet.normalize import Normalization
from napari_unet.training import TrainConfig, _Batcher, _prepare_plane, train

# The run both sides do: SGD with momentum and augmentation on, no dropout.
CONFIG = {
    "iterations": 3,
    "batch_size": 4,
    "tile_shape": (60, 60),  # output 20x20 for a depth-2 valid U-Net
    "lr": 0.01,
    "device": "cpu",
    "val_every": 100,
    "checkpoint_every": 100,
    "seed": 7,
}


def _cells(seed: int, size: int = 64, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(4, 8)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = i
    image = (labels > 0) * 150.0 + rng.normal(40, 10, labels.shape)
    return image.astype(np.uint16), labels


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, num_classes=3, dropout=0.0)


def test_ranks_draw_the_single_process_batch_between_them():
    config = TrainConfig(**CONFIG)
    model = _model()
    planes = [
        _prepare_plane(
            image[None], labels, None, Normalization(), config, config.tile_shape, model.halo
        )
        for image, labels in (_cells(0), _cells(1))
    ]
    single = _Batcher(planes, model, config.tile_shape, config, 7)
    ranks = [
        _Batcher(planes, model, config.tile_shape, config, 7, rank=r, world_size=2)
        for r in range(2)
    ]
    for _ in range(2):
        whole = single.next()
        parts = [b.next() for b in ranks]
        assert parts[0][0].shape[0] == 2
        for i in range(3):  # images, classes, weights
            assert torch.equal(whole[i], torch.cat([parts[0][i], parts[1][i]]))


_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, sys.argv[2])
    from test_distributed import CONFIG, _cells, _model
    from napari_unet import distributed
    from napari_unet.cli import main
    from napari_unet.training import TrainConfig, train

    root = Path(sys.argv[1])
    samples = [_cells(0), _cells(1)]
    result = train(
        samples,
        model=_model(),
        config=TrainConfig(**CONFIG, distributed=True),
        out=root / "ddp.safetensors",
    )
    losses = torch.tensor(result.losses)
    # Every rank reports the global batch's loss.
    gathered = [torch.zeros_like(losses) for _ in range(distributed.world_size())]
    torch.distributed.all_gather(gathered, losses)
    assert all(torch.equal(g, losses) for g in gathered)
    if distributed.is_main():
        torch.save(losses, root / "ddp_losses.pt")
    # The command line in the same process group.
    code = main(
        ["train", "--images", str(root / "images"), "--labels", str(root / "labels"),
         "--out", str(root / "cli.safetensors"), "--iterations", "2", "--depth", "1",
         "--base-channels", "2", "--batch-size", "2", "--tile", "40", "--device", "cpu",
         "--distributed"]
    )
    sys.exit(code)
    """
)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_and_write_once(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for seed in (0, 1):
        image, labels = _cells(seed)
        tifffile.imwrite(tmp_path / "images" / f"c{seed}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"c{seed}.tif", labels)
    script = tmp_path / "run_ddp.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", str(script), str(tmp_path), os.path.dirname(__file__)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]

    # Identical weights (to float tolerance) to one process with batch_size 4.
    single = train([_cells(0), _cells(1)], model=_model(), config=TrainConfig(**CONFIG))
    ddp_model, meta = load_model(tmp_path / "ddp.safetensors")
    assert meta["training"]["world_size"] == 2 and meta["training"]["iteration"] == 3
    reference = single.model.state_dict()
    for name, value in ddp_model.state_dict().items():
        torch.testing.assert_close(value, reference[name], atol=1e-5, rtol=1e-4)
    ddp_losses = torch.load(tmp_path / "ddp_losses.pt", weights_only=True)
    np.testing.assert_allclose(ddp_losses.numpy(), single.losses, rtol=1e-4)

    # The command line: rank 0 alone printed the summary; the files load.
    assert launched.stdout.count("wrote ") == 1
    model, meta = load_model(tmp_path / "cli.safetensors")
    assert model.depth == 1
    assert meta["training"]["iteration"] == 2 and meta["training"]["world_size"] == 2
    assert load_model(tmp_path / "cli.last.safetensors")[1]["training"]["finished"]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "cli.last.safetensors",
        "cli.safetensors",
        "ddp.last.safetensors",
        "ddp.safetensors",
    ]


def test_distributed_without_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    from napari_unet.cli import main

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    image, labels = _cells(0)
    tifffile.imwrite(tmp_path / "images" / "a.tif", image)
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    args = ["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels")]
    assert main([*args, "--out", str(tmp_path / "m.safetensors"), "--distributed"]) == 2
    assert "torchrun" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="torchrun"):
        train([_cells(0)], model=_model(), config=TrainConfig(**CONFIG, distributed=True))
