"""Architectures by name: the factory looks them up here."""

from model.architectures.u2net import U2Net
from model.architectures.unet import UNet

ARCHITECTURES = {"u2net": U2Net, "unet": UNet}
