"""Architectures by name: the factory looks them up here."""

from model.architectures.u2net import U2Net

ARCHITECTURES = {"u2net": U2Net}
