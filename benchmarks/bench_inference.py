"""Inference backends and precisions against fp32 eager (issue 17).

Speed: one 572x572 tile of the paper's U-Net (base 64, valid padding, 31 M
parameters), batch 1. The machine is shared, so every path is timed in paired
rounds: in each round the baseline (fp32 eager, NCHW) runs, then the path;
the ratio is the median over rounds of baseline time / path time. GFLOP/s
counts 2 x multiply-adds of the convolutions; the share of the peak uses the
ceilings in ../shared/notes/performance-facts.md (fp32 ~290 GFLOP/s, bf16 AMX
~1,500 GFLOP/s on 2 threads).

Agreement: the pretrained ``nuclei`` model on a DSB2018 image (its own kind
of check image, :func:`napari_unet.agreement.inference_check`): share of
pixels with the fp32 class and instance count change.

End to end: the ``nuclei`` model, 2048x2048 image and a 20-plane 512x512
stack (normalise, predict, labels), the default backend against eager.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import Row
from napari_unet.agreement import inference_check
from napari_unet.inference import bf16_supported, cache_onnx, make_backend
from napari_unet.models import UNet

DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "images"
PEAK = {"fp32": 290.0, "bf16": 1500.0}  # GFLOP/s, 2 threads, performance-facts.md


def conv_gflop(model: nn.Module, shape: tuple[int, ...]) -> float:
    """2 x multiply-adds of every convolution for one input of ``shape`` (C, Y, X)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        k = int(np.prod(module.kernel_size))
        cin = module.in_channels // module.groups
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels * k
        else:
            total += output.numel() * cin * k

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    with torch.inference_mode():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return 2 * total / 1e9


def _time(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def _plain_eager(model: nn.Module):
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(x), 1).numpy()

    return run


def run(quick: bool = False) -> list[Row]:
    torch.manual_seed(0)
    base = 16 if quick else 64
    rounds = 3 if quick else 5
    net = UNet(base_channels=base, dropout=0.0).eval()
    plain = UNet(base_channels=base, dropout=0.0).eval()
    plain.load_state_dict(net.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 572, 572)).astype("f4"))
    gflop = conv_gflop(plain, (1, 572, 572))
    baseline = _plain_eager(plain)

    start = time.perf_counter()
    cache_onnx(net)
    export_s = time.perf_counter() - start
    paths = {"eager channels_last fp32": make_backend(net, backend="eager", precision="fp32")}
    start = time.perf_counter()
    paths["onnxruntime fp32"] = make_backend(net, backend="onnxruntime")
    session_s = time.perf_counter() - start
    paths["auto (default)"] = make_backend(net, device="cpu")
    if bf16_supported("cpu"):
        paths["eager bf16 autocast"] = make_backend(net, backend="eager", precision="bf16")
    reference = baseline(x)
    rows = _speed(paths, baseline, x, reference, gflop, base, rounds)
    print(
        f"  one-off: ONNX export {export_s:.1f} s, session {session_s:.2f} s; "
        f"load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    rows += _show(_agreement(quick))
    rows += _show(_end_to_end(quick))
    if not quick:
        # Last: compiling the paper network takes minutes on a busy 2-core machine.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = {
                "torch.compile fp32": make_backend(net, backend="compile", precision="fp32")
            }
            if bf16_supported("cpu"):
                compiled["torch.compile bf16 (frozen)"] = make_backend(
                    net, backend="compile", precision="bf16"
                )
            rows += _speed(compiled, baseline, x, reference, gflop, base, rounds)
    return rows


def _show(rows: list[Row]) -> list[Row]:
    for r in rows:
        print(f"  {r.name}: {r.ratio:.4g} ({r.ours_value:.4g} vs {r.baseline_value:.4g})",
              file=sys.stderr, flush=True)  # fmt: skip
    return rows


def _speed(paths, baseline, x, reference, gflop, base, rounds) -> list[Row]:
    """Paired rounds of each path against the baseline on one tile."""
    rows = []
    for name, backend in paths.items():
        warm = time.perf_counter()
        probs = backend(x)  # warm-up (compiles a compiled backend)
        first_s = time.perf_counter() - warm
        ratios, times, base_times = [], [], []
        for _ in range(rounds):
            b = _time(baseline, x)
            t = _time(backend, x)
            ratios.append(b / t)
            times.append(t)
            base_times.append(b)
        t = statistics.median(times)
        precision = "bf16" if "bf16" in name else "fp32"
        rate = gflop / t
        agree = float(np.mean(probs.argmax(1) == reference.argmax(1)))
        diff = float(np.abs(probs - reference).max())
        rows.append(
            Row(
                name=(
                    f"{name} [{backend.name}]: 572 tile base {base}, {rate:.0f} GFLOP/s "
                    f"({100 * rate / PEAK[precision]:.0f}% of {precision} peak), "
                    f"max|dp| {diff:.1e}, same class {100 * agree:.4f}%, first call "
                    f"{first_s:.1f} s"
                ),
                baseline="fp32 eager NCHW",
                baseline_value=statistics.median(base_times),
                ours_value=t,
                unit="s/tile",
                ratio=statistics.median(ratios),
                goal={"auto (default)": ">= 1.8x", "eager bf16 autocast": ">= 2.5x"}.get(name, ""),
            )
        )
        r = rows[-1]
        print(
            f"  {r.name}: {r.ratio:.2f}x ({r.ours_value:.3f} vs {r.baseline_value:.3f} s), "
            f"load {os.getloadavg()[0]:.1f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def _dsb_image() -> np.ndarray | None:
    from skimage.io import imread

    if not DSB.is_dir():
        print("  (no ../shared/data/dsb2018: agreement on real images skipped)", file=sys.stderr)
        return None
    # The largest greyscale-looking image of the first 40, so the check sees many nuclei.
    files = sorted(DSB.glob("*.png"))[:40]
    images = [np.asarray(imread(f))[..., :3].mean(-1) for f in files]
    return max(images, key=lambda a: a.size).astype(np.float32)


def _agreement(quick: bool) -> list[Row]:
    from napari_unet.normalize import Normalization
    from napari_unet.pretrained import load_pretrained

    image = _dsb_image()
    if image is None:
        return []
    model, meta = load_pretrained("nuclei")
    norm = Normalization.from_dict(meta.get("normalization"))(image)
    paths = (("onnxruntime", "fp32"), ("eager", "bf16"))
    check = inference_check(model, norm, paths=paths)
    rows = []
    for name, result in check["paths"].items():
        if "error" in result:
            continue
        rows.append(
            Row(
                name=(
                    f"agreement nuclei {image.shape[0]}x{image.shape[1]}: {name}, "
                    f"max|dp| {result['max_abs_diff']:.1e}, instances {result['instances']} "
                    f"vs {check['instances']}"
                ),
                baseline="eager fp32",
                baseline_value=1.0,
                ours_value=result["class_agreement"],
                unit="same class",
                ratio=result["class_agreement"],
                goal=">= 0.999",
            )
        )
    return rows


def _end_to_end(quick: bool) -> list[Row]:
    from napari_unet.normalize import Normalization
    from napari_unet.postprocess import probabilities_to_labels
    from napari_unet.pretrained import load_pretrained
    from napari_unet.tiling import predict_stack

    model, meta = load_pretrained("nuclei")
    norm = Normalization.from_dict(meta.get("normalization"))
    rng = np.random.default_rng(1)
    size, planes = (1024, 4) if quick else (2048, 20)
    cases = {
        f"{size}x{size} image": rng.gamma(2.0, 50.0, size=(1, size, size)).astype("f4"),
        f"{planes}-plane 512x512 stack": rng.gamma(2.0, 50.0, size=(planes, 512, 512)).astype(
            "f4"
        ),
    }
    rows = []
    for case, data in cases.items():

        def pipeline(backend: str, data: np.ndarray = data) -> float:
            start = time.perf_counter()
            x = np.stack([norm(p) for p in data])
            probs = predict_stack(model, x, backend=backend, precision="fp32")
            for z in range(probs.shape[1]):
                probabilities_to_labels(probs[:, z], spatial_dims=2)
            return time.perf_counter() - start

        cache_onnx(model)  # the default finds the export cached (made once, at first use)
        pairs = [(pipeline("eager"), pipeline("auto")) for _ in range(1 if quick else 2)]
        eager_s = statistics.median(p[0] for p in pairs)
        auto_s = statistics.median(p[1] for p in pairs)
        rows.append(
            Row(
                name=f"end to end nuclei {case} (normalise, predict, labels)",
                baseline="eager channels_last",
                baseline_value=eager_s,
                ours_value=auto_s,
                unit="s",
                ratio=eager_s / auto_s,
            )
        )
    return rows
