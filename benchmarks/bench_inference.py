"""Inference backends and precisions against fp32 eager (issue 17).

Speed: one 572x572 tile of the paper's U-Net (base 64, valid padding, 31 M
parameters), batch 1. The machine is shared, so every path is timed in paired
rounds: in each round the baseline (fp32 eager, NCHW) runs, then the path;
the ratio is the median over rounds of baseline time / path time. Each round
also runs the issue's own baseline, ``model(x)`` with autograd on (no
``inference_mode``), whose ratio each row prints as "vs autograd". GFLOP/s
counts 2 x multiply-adds of the convolutions; the share of the peak is of the
machine's matrix-multiply ceiling measured in the same run (fp32 and bf16
4096x4096 products, best of 3), which is what direct convolution can reach.
Besides the library's paths, candidates that lost are timed too, so the
choice stays measured: ONNX Runtime with its default spinning workers, and
TorchScript frozen + ``optimize_for_inference`` (oneDNN fusions).

Agreement: the pretrained ``nuclei`` model on a DSB2018 image (its own kind
of check image, :func:`napari_unet.agreement.inference_check`): share of
pixels with the fp32 class and instance count change.

End to end: the ``nuclei`` model, 2048x2048 image and a 20-plane 512x512
stack (normalise, predict, labels), the default backend against eager, in
this process (predict and labels timed apart) and as the command line
``napari-unet predict --model nuclei --diameter none`` in a fresh process
per run (with the ONNX export cached, and for the image also with an empty
cache: a first prediction must not be slower than eager; ``--diameter none``
keeps the work fixed: the estimate would rescale the tiled image by its own
guess). Images are tiled from a DSB2018
image when ../shared/data is present, else gamma noise.
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
PEAK = {"fp32": 290.0, "bf16": 1500.0}  # GFLOP/s, 2 threads, performance-facts.md (fallback)


def gemm_ceiling(dtype: torch.dtype, n: int = 4096) -> float:
    """GFLOP/s of an n x n x n matrix product, best of 3 (fp32: MKL; bf16: oneDNN/AMX)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_time(lambda _: torch.mm(a, b), None) for _ in range(3))
    return 2 * n**3 / best / 1e9


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

    run.model = model
    return run


def _autograd_eager(model: nn.Module):
    """The issue's "plain fp32 eager": ``model(x)`` as written, autograd on."""

    def run(x: torch.Tensor) -> np.ndarray:
        return torch.softmax(model(x), 1).detach().numpy()

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
    paths.update(_candidates(net, x))
    reference = baseline(x)
    if not quick:
        PEAK["fp32"] = gemm_ceiling(torch.float32)
        if bf16_supported("cpu"):
            PEAK["bf16"] = gemm_ceiling(torch.bfloat16)
        print(
            f"  matrix-multiply ceiling: fp32 {PEAK['fp32']:.0f} GFLOP/s, bf16 "
            f"{PEAK['bf16']:.0f} GFLOP/s; {gflop:.0f} GFLOP per tile; "
            f"load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
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


class _Named:
    """A plain callable with the ``name`` the table prints."""

    def __init__(self, name: str, fn) -> None:
        self.name = name
        self.fn = fn

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.fn(x)


def _candidates(net: nn.Module, x: torch.Tensor) -> dict:
    """Paths timed for the choice but not used by the library (they lost)."""
    import onnxruntime as ort

    from napari_unet.inference import _cached_onnx_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(_cached_onnx_path(net)), options, providers=["CPUExecutionProvider"]
    )

    def spinning(t: torch.Tensor) -> np.ndarray:
        return session.run(["output"], {"input": t.numpy()})[0]

    plain = UNet(**net.config()).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(plain, x)))

    def scripted(t: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(frozen(t), 1).numpy()

    return {
        "onnxruntime fp32, spinning workers (ORT default)": _Named("onnxruntime", spinning),
        "TorchScript frozen + optimize_for_inference fp32": _Named("torchscript", scripted),
    }


def _show(rows: list[Row]) -> list[Row]:
    for r in rows:
        print(f"  {r.name}: {r.ratio:.4g} ({r.ours_value:.4g} vs {r.baseline_value:.4g})",
              file=sys.stderr, flush=True)  # fmt: skip
    return rows


def _speed(paths, baseline, x, reference, gflop, base, rounds) -> list[Row]:
    """Paired rounds of each path against the baseline on one tile."""
    rows = []
    autograd = _autograd_eager(baseline.model)
    for name, backend in paths.items():
        warm = time.perf_counter()
        probs = backend(x)  # warm-up (compiles a compiled backend)
        first_s = time.perf_counter() - warm
        ratios, autograd_ratios, times, base_times = [], [], [], []
        for _ in range(rounds):
            b = _time(baseline, x)
            a = _time(autograd, x)
            t = _time(backend, x)
            ratios.append(b / t)
            autograd_ratios.append(a / t)
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
                    f"{first_s:.1f} s, vs autograd {statistics.median(autograd_ratios):.2f}x"
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
            f"  {r.name}: {r.ratio:.2f}x ({r.ours_value:.3f} vs {r.baseline_value:.3f} s; "
            f"vs autograd {statistics.median(autograd_ratios):.2f}x), "
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


def _inputs(quick: bool) -> dict[str, np.ndarray]:
    """A large image and a stack for the end-to-end runs (DSB2018 content where present)."""
    size, planes = (1024, 4) if quick else (2048, 20)
    source = _dsb_image()
    if source is None:
        rng = np.random.default_rng(1)
        image = rng.gamma(2.0, 50.0, size=(size, size)).astype("f4")
    else:
        reps = [-(-size // n) for n in source.shape]
        image = np.tile(source, reps)[:size, :size].astype("f4")
    step = (size - 512) // max(planes - 1, 1)
    stack = np.stack([image[k * step : k * step + 512, -512:] for k in range(planes)])
    return {f"{size}x{size} image": image[np.newaxis], f"{planes}-plane 512x512 stack": stack}


def _end_to_end(quick: bool) -> list[Row]:
    from napari_unet.normalize import Normalization
    from napari_unet.postprocess import probabilities_to_labels
    from napari_unet.pretrained import load_pretrained
    from napari_unet.tiling import predict_stack

    model, meta = load_pretrained("nuclei")
    norm = Normalization.from_dict(meta.get("normalization"))
    rows = []
    cases = _inputs(quick)
    for case, data in cases.items():

        def pipeline(backend: str, data: np.ndarray = data) -> tuple[float, float]:
            start = time.perf_counter()
            x = np.stack([norm(p) for p in data])
            probs = predict_stack(model, x, backend=backend, precision="fp32")
            predicted = time.perf_counter()
            for z in range(probs.shape[1]):
                probabilities_to_labels(probs[:, z], spatial_dims=2)
            return time.perf_counter() - start, predicted - start

        cache_onnx(model)  # the default finds the export cached (made once, at first use)
        pairs = [(pipeline("eager"), pipeline("auto")) for _ in range(1 if quick else 2)]
        eager_s = statistics.median(p[0][0] for p in pairs)
        auto_s = statistics.median(p[1][0] for p in pairs)
        predict_ratio = statistics.median(p[0][1] / p[1][1] for p in pairs)
        rows.append(
            Row(
                name=(
                    f"end to end nuclei {case} (normalise, predict, labels; predict alone "
                    f"{predict_ratio:.2f}x; load {os.getloadavg()[0]:.1f})"
                ),
                baseline="eager channels_last",
                baseline_value=eager_s,
                ours_value=auto_s,
                unit="s",
                ratio=eager_s / auto_s,
            )
        )
    rows += _command_line(cases, rounds=1 if quick else 2)
    return rows


def _command_line(cases: dict[str, np.ndarray], rounds: int) -> list[Row]:
    """``napari-unet predict --model nuclei`` in fresh processes: default against eager."""
    import subprocess
    import tempfile

    import tifffile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for index, (case, data) in enumerate(cases.items()):
            path = root / f"input{index}.tif"
            tifffile.imwrite(path, data[0] if data.shape[0] == 1 else data)

            def cli(backend: str, cache: Path | None = None, path: Path = path) -> float:
                env = dict(os.environ)
                if cache is not None:
                    env["NAPARI_UNET_CACHE_DIR"] = str(cache)
                argv = [sys.executable, "-m", "napari_unet.cli", "predict", "--model", "nuclei",
                        str(path), "--out", str(root / "out"), "--overwrite", "--quiet",
                        "--diameter", "none", "--backend", backend]  # fmt: skip
                start = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True, text=True)
                elapsed = time.perf_counter() - start
                if done.returncode:
                    raise RuntimeError(f"napari-unet predict failed: {done.stderr[-2000:]}")
                print(f"    {backend}: {elapsed:.1f} s, {done.stdout.strip()}", file=sys.stderr)
                return elapsed

            settings = [("export cached", None)]
            if index == 0:
                settings.append(("first run, empty cache", root / f"cache{index}"))
            for label, cache in settings:
                pairs = []
                for r in range(rounds if cache is None else 1):
                    empty = None if cache is None else cache.with_name(f"{cache.name}-{r}")
                    pairs.append((cli("eager"), cli("auto", empty)))
                eager_s = statistics.median(p[0] for p in pairs)
                auto_s = statistics.median(p[1] for p in pairs)
                rows.append(
                    Row(
                        name=(
                            f"napari-unet predict --model nuclei, {case}, {label} "
                            f"(load {os.getloadavg()[0]:.1f})"
                        ),
                        baseline="--backend eager",
                        baseline_value=eager_s,
                        ours_value=auto_s,
                        unit="s",
                        ratio=eager_s / auto_s,
                    )
                )
    return rows
