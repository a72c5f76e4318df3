"""Network architectures: the U-Net, the U-Net++ and their building blocks."""

from .blocks import ConvBlock, Down, UpConv, center_crop, he_normal_
from .unet import UNet
from .unetpp import UNetPlusPlus

__all__ = ["ConvBlock", "Down", "UNet", "UNetPlusPlus", "UpConv", "center_crop", "he_normal_"]
