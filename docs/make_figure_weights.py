"""Make docs/images/weight_map_figure.png, after figure 3 of the U-Net paper.

Top row: a DSB2018 nuclei image, its instance labels, the training targets
(background / cell / separating border) and the weight map as a heat map.
Bottom row: the image with its label outlines, and three random elastic
deformations of both (grid 3 x 3, sigma 10 pixels, as in the paper).

Needs only NumPy and Pillow, and the shared data set beside the repository
(``<repo>/../shared/data/dsb2018``). Run from anywhere::

    python docs/make_figure_weights.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from napari_unet.augment import elastic_deform
from napari_unet.weights import instances_to_classes, separation_borders, weight_map

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dsb2018"
OUT = REPO / "docs" / "images" / "weight_map_figure.png"

# A greyscale fluorescence image with many touching nuclei, and a crop of it.
SAMPLE = "0ea221716cf13710214dcd331a61cea48308c3940df1d28cfc7fd817c83714e1"
CROP = (slice(140, 380), slice(200, 440))
SCALE = 2  # display pixels per image pixel
PAD = 16
TITLE_HEIGHT = 40

# viridis, sampled at 9 points: enough for a smooth linear interpolation
VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=float,
)


def colormap(values: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((values - low) / (high - low), 0, 1) * (len(VIRIDIS) - 1)
    i = np.minimum(t.astype(int), len(VIRIDIS) - 2)
    f = (t - i)[..., None]
    return ((1 - f) * VIRIDIS[i] + f * VIRIDIS[i + 1]).astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (0.5, 99.8))
    scaled = np.clip((image - low) / (high - low), 0, 1) * 255
    return np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=-1)


def label_colours(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(3)
    table = rng.integers(60, 256, size=(int(labels.max()) + 1, 3)).astype(np.uint8)
    table[0] = 0
    return table[labels]


def outlines(rgb: np.ndarray, labels: np.ndarray, colour=(255, 200, 0)) -> np.ndarray:
    edge = (ndi.maximum_filter(labels, 3) != ndi.minimum_filter(labels, 3)) & (labels > 0)
    out = rgb.copy()
    out[edge] = colour
    return out


def upscale(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).resize(
        (rgb.shape[1] * SCALE, rgb.shape[0] * SCALE), Image.Resampling.NEAREST
    )


def colorbar(low: float, high: float, height: int, font: ImageFont.ImageFont) -> Image.Image:
    bar = colormap(np.linspace(high, low, height)[:, None].repeat(18, axis=1), low, high)
    panel = Image.new("RGB", (80, height), "white")
    panel.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(panel)
    for value in np.arange(low, high + 1e-9, 2.0):
        y = round(float((high - value) / (high - low) * (height - 1)))
        draw.line([(18, y), (24, y)], fill="black", width=2)
        draw.text((27, min(max(y - 10, 0), height - 22)), f"{value:.0f}", fill="black", font=font)
    return panel


def main() -> None:
    image = np.asarray(Image.open(DATA / "images" / f"{SAMPLE}.png"))[..., 0].astype(np.float32)
    labels = tifffile.imread(DATA / "labels" / f"{SAMPLE}.tif").astype(np.int64)
    image, labels = image[CROP], labels[CROP]
    _, labels = np.unique(labels, return_inverse=True)  # ids 1..n inside the crop
    labels = labels.reshape(image.shape)

    weights = weight_map(labels, w0=10.0, sigma=5.0)
    classes = instances_to_classes(labels)
    assert np.array_equal(classes == 2, separation_borders(labels))
    target_rgb = np.array([[0, 0, 0], [235, 235, 235], [230, 40, 40]], dtype=np.uint8)[classes]
    high = float(np.ceil(weights.max()))

    image_rgb = grey(image)
    top = [
        ("a  image", upscale(image_rgb)),
        ("b  instance labels", upscale(label_colours(labels))),
        ("c  targets: cell / separating border", upscale(target_rgb)),
        ("d  weight map, w0 = 10, sigma = 5", upscale(colormap(weights, 0.0, high))),
    ]
    normalised = (image - image.mean()) / image.std()
    bottom = [("e  image and label outlines", upscale(outlines(image_rgb, labels)))]
    for k, seed in enumerate((1, 2, 3)):
        deformed, deformed_labels, _ = elastic_deform(
            normalised[None], labels, grid=3, sigma=10.0, rng=seed
        )
        rgb = outlines(grey(deformed[0]), deformed_labels)
        bottom.append((f"{'fgh'[k]}  elastic deformation, seed {seed}", upscale(rgb)))

    font = ImageFont.load_default(size=22)
    small = ImageFont.load_default(size=18)
    width, height = top[0][1].size
    bar = colorbar(0.0, high, height, small)
    canvas = Image.new(
        "RGB",
        (PAD + 4 * (width + PAD) + bar.width + PAD, PAD + 2 * (TITLE_HEIGHT + height + PAD)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    for row, panels in enumerate((top, bottom)):
        y = PAD + row * (TITLE_HEIGHT + height + PAD)
        for col, (title, panel) in enumerate(panels):
            x = PAD + col * (width + PAD)
            draw.text((x, y + 6), title, fill="black", font=font)
            canvas.paste(panel, (x, y + TITLE_HEIGHT))
    canvas.paste(bar, (PAD + 4 * (width + PAD), PAD + TITLE_HEIGHT))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(OUT, optimize=True)
    print(f"wrote {OUT} ({canvas.width}x{canvas.height}), {int(labels.max())} cells")


if __name__ == "__main__":
    main()
