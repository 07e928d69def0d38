"""Models: architectures, the registry of specs, weights and the runtimes that run them.

No I/O here but loading weights. Torch is imported only when a torch model is built, so an
ONNX Runtime worker does not pay for it.
"""

from model.specs import MODEL_SPECS, ModelSpec, PreprocessSpec, get_spec, list_models

__all__ = ["MODEL_SPECS", "ModelSpec", "PreprocessSpec", "create_model", "create_runtime", "get_spec", "list_models"]


def __getattr__(name):
    if name == "create_model":
        from model.factory import create_model

        return create_model
    if name == "create_runtime":
        from model.runtimes import create_runtime

        return create_runtime
    raise AttributeError(name)
