"""Post-processing: pure functions on numpy arrays (decode, alpha ops, compositing, encoding)."""

from postproc.decode import DecodedImage, DecodeError, decode_image, model_input
from postproc.params import PostprocParams
from postproc.render import Rendered, render

__all__ = ["DecodeError", "DecodedImage", "PostprocParams", "Rendered", "decode_image", "model_input", "render"]
