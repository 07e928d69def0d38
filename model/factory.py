"""One factory: `create_model(name)` builds the architecture from the spec and loads its weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from model import weights as weights_mod
from model.architectures import ARCHITECTURES
from model.specs import ModelSpec, get_spec


def onnx_state_dict(module: nn.Module, onnx_path: Path) -> dict[str, torch.Tensor]:
    """Map an ONNX file's convolution weights onto `module` by execution order.

    Exported graphs with BatchNorm folded lose the PyTorch parameter names, but they keep the
    order in which convolutions run. We record that order with hooks on a small dummy input and
    check every shape and dilation, so a mismatched architecture fails loudly, not silently.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: i for i in graph.initializer}
    onnx_convs = [n for n in graph.node if n.op_type == "Conv"]

    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    if len(order) != len(onnx_convs):
        raise ValueError(f"{onnx_path} has {len(onnx_convs)} convolutions, the architecture runs {len(order)}")

    names = {m: n for n, m in module.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for conv, node in zip(order, onnx_convs):
        w = numpy_helper.to_array(inits[node.input[1]])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if tuple(w.shape) != tuple(conv.weight.shape) or tuple(attrs.get("dilations", (1, 1))) != conv.dilation:
            raise ValueError(f"{names[conv]}: ONNX conv {node.name or node.output[0]} has weight {w.shape} and "
                             f"dilation {attrs.get('dilations')}, "
                             f"expected {tuple(conv.weight.shape)} and {conv.dilation}")
        state[f"{names[conv]}.weight"] = torch.from_numpy(w.copy())
        if len(node.input) > 2:
            state[f"{names[conv]}.bias"] = torch.from_numpy(numpy_helper.to_array(inits[node.input[2]]).copy())
    return state


def build_architecture(spec: ModelSpec) -> nn.Module:
    try:
        cls = ARCHITECTURES[spec.architecture]
    except KeyError:
        raise ValueError(f"spec {spec.name!r} names architecture {spec.architecture!r}; "
                         f"known: {', '.join(sorted(ARCHITECTURES))}") from None
    return cls(**spec.arch_kwargs)


def check_same_architecture(spec: ModelSpec, path: Path) -> None:
    """A checkpoint whose own spec names another architecture fails with the fix, not a shape dump."""
    try:
        own = weights_mod.spec_from_file(path)
    except ValueError:  # weights alone, no spec of their own: the named spec is all there is
        return
    if (own.architecture, own.arch_kwargs) != (spec.architecture, spec.arch_kwargs):
        raise ValueError(f"{path} holds {own.architecture} {own.arch_kwargs}, but {spec.name!r} is "
                         f"{spec.architecture} {spec.arch_kwargs}: name the file alone to use its own spec")


def create_model(name: str | ModelSpec, *, pretrained: bool = True,
                 weights: str | os.PathLike | None = None) -> nn.Module:
    """Build model `name` from the registry; with `pretrained`, load its weights (the cache or a local path).

    `name` may also be a path to a .safetensors/.onnx file that carries its spec, or a spec.
    The returned module carries its spec as `.spec`, so callers ask the model how to feed it.
    """
    spec = get_spec(name)
    module = build_architecture(spec)
    if pretrained or weights is not None:
        path = weights_mod.resolve(spec, weights)
        if path.suffix == ".onnx":
            state = onnx_state_dict(module, path)
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            check_same_architecture(spec, path)
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    module.spec = spec
    return module.eval()
