"""Network architectures: the U-Net and its building blocks."""

from .blocks import ConvBlock, Down, UpConv, center_crop, he_normal_
from .unet import UNet

__all__ = ["ConvBlock", "Down", "UNet", "UpConv", "center_crop", "he_normal_"]
