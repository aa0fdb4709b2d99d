"""Import and export of MinkowskiEngine-format MinkUNet state dicts (the SLidR family).

MinkowskiEngine names a convolution's weight ``kernel``, shaped (K³, C_in, C_out), or
(C_in, C_out) when K = 1, its bias (1, C_out), and wraps every batch norm as ``<name>.bn``.
Kernel offsets are ordered as ours (x fastest), so converting is renaming and reshaping.
SLidR checkpoints hold the network under ``model_points`` (pre-training) or ``state_dict``,
sometimes with a ``model.`` or ``module.`` prefix; all are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from relkd_core.errors import CheckpointError

__all__ = [
    "from_minkowski_state_dict",
    "load_minkowski_state_dict",
    "to_minkowski_state_dict",
]

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_PREFIXES = ("module.", "model.", "model_points.")


def from_minkowski_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Our key names and shapes for a MinkowskiEngine/SLidR MinkUNet state dict (pure).

    Unwraps ``model_points`` / ``state_dict`` entries and ``module.`` / ``model.`` prefixes.
    Raises CheckpointError for a value that is not a tensor, naming its key.
    """
    state = _unwrap(state_dict)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{key}: expected a tensor, got {type(value).__name__}")
        name = key
        for field in _BN_FIELDS:
            if name.endswith(f".bn.{field}"):
                name = name[: -len(f".bn.{field}")] + f".{field}"
                break
        if name.endswith(".kernel"):
            name = name[: -len(".kernel")] + ".weight"
            if value.ndim == 2:  # a 1×1×1 kernel is stored without its volume axis
                value = value.unsqueeze(0)
        elif name.endswith(".bias") and value.ndim == 2 and value.shape[0] == 1:
            value = value.reshape(-1)  # convolution bias (1, C_out)
        converted[name] = value
    return converted


def to_minkowski_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under MinkowskiEngine/SLidR names and shapes (inverse of the
    above): what a MinkowskiEngine ``Res16UNet``-style MinkUNet of the same size loads."""
    batch_norms = {name for name, module in model.named_modules()
                   if isinstance(module, nn.modules.batchnorm._BatchNorm)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner, _, field = key.rpartition(".")
        if owner in batch_norms:
            out[f"{owner}.bn.{field}"] = value
        elif field == "weight" and value.ndim == 3:
            out[f"{owner}.kernel"] = value[0] if value.shape[0] == 1 else value
        elif field == "bias" and value.ndim == 1:
            out[key] = value.reshape(1, -1)
        else:
            out[key] = value
    return out


def load_minkowski_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], *, exclude: Sequence[str] = ()
) -> None:
    """Load a MinkowskiEngine/SLidR MinkUNet state dict into ``model`` (in place).

    ``exclude`` lists prefixes of our key names to leave as they are, e.g. ``("final.",)`` to
    keep a freshly initialised head when the checkpoint's output size differs. Every other key
    must match exactly: a key the model lacks, a key the checkpoint lacks, or a shape that
    differs raises CheckpointError naming the key (before anything is loaded).
    """
    converted = from_minkowski_state_dict(state_dict)
    own = model.state_dict()

    def kept(name: str) -> bool:
        return not any(name.startswith(prefix) for prefix in exclude)

    unexpected = sorted(k for k in converted if k not in own and kept(k))
    if unexpected:
        raise CheckpointError(
            f"checkpoint key {unexpected[0]!r} has no counterpart in {type(model).__name__} "
            f"({len(unexpected)} unexpected in all); is it a MinkUNet of another variant?"
        )
    missing = sorted(k for k in own if k not in converted and kept(k))
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {missing[0]!r} ({len(missing)} missing in all); pass "
            "exclude=('final.',) to keep a new head"
        )
    for name, value in converted.items():
        if kept(name) and value.shape != own[name].shape:
            raise CheckpointError(
                f"{name}: checkpoint shape {tuple(value.shape)} != model shape "
                f"{tuple(own[name].shape)}; check variant, width_multiplier, input_features "
                "and out_dim"
            )
    selected = {k: v for k, v in converted.items() if kept(k)}
    model.load_state_dict(selected, strict=False)


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"expected a state dict (mapping), got {type(state_dict).__name__}")
    for entry in ("model_points", "state_dict"):
        inner = state_dict.get(entry)
        if isinstance(inner, Mapping):
            state_dict = inner
            break
    for prefix in _PREFIXES:
        if state_dict and all(str(k).startswith(prefix) for k in state_dict):
            state_dict = {str(k)[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict
