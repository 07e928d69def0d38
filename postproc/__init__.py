"""Post-processing: pure functions on numpy arrays (decode, alpha ops, compositing, encoding)."""

from postproc.decode import DecodedImage, DecodeError, decode_image, model_input
from postproc.params import PostprocParams
from postproc.presets import PRESETS
from postproc.refine import RefinementSkipped
from postproc.render import Rendered, compose_and_encode, refine_alpha, render

__all__ = ["DecodeError", "DecodedImage", "PRESETS", "PostprocParams", "RefinementSkipped", "Rendered",
           "compose_and_encode", "decode_image", "model_input", "refine_alpha", "render"]
