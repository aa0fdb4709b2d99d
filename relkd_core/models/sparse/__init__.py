"""Sparse-convolution backends behind one small interface (see ``base``).

The registry is a plain dict from backend name to the module that implements it (and, after a
colon, the name of its geometry builder when not ``build_geometry``); third-party engines are
imported only when their backend is first used, each in its own module. ``native`` runs the
compiled fast path where it can be built and the PyTorch reference elsewhere; ``native-ref``
always runs the reference.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from relkd_core.errors import ModelError
from relkd_core.models.sparse.base import SparseGeometry

__all__ = ["BACKENDS", "SparseGeometry", "available_backends", "build_geometry", "check_backend"]

BACKENDS: dict[str, str] = {
    "native": "relkd_core.models.sparse.native",
    "native-ref": "relkd_core.models.sparse.native:build_reference_geometry",
    "spconv": "relkd_core.models.sparse.spconv_backend",
    "minkowski": "relkd_core.models.sparse.minkowski_backend",
}


def _backend_module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ModelError(f"unknown sparse backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name].partition(":")[0])


def check_backend(name: str) -> None:
    """Raise ModelError (with the install hint) unless backend ``name`` can run here."""
    module = _backend_module(name)
    check = getattr(module, "check_available", None)
    if check is not None:
        check()


def available_backends() -> list[str]:
    """Names of the backends whose engine is installed, ``native`` first."""
    names = []
    for name in BACKENDS:
        try:
            check_backend(name)
        except ModelError:
            continue
        names.append(name)
    return names


def build_geometry(name: str, coords: torch.Tensor, num_levels: int) -> SparseGeometry:
    """Backend ``name``'s geometry of (V, 4) int64 ``(batch, a, b, c)`` coordinates."""
    builder = BACKENDS[name].partition(":")[2] if name in BACKENDS else ""
    build = getattr(_backend_module(name), builder or "build_geometry")
    geometry: SparseGeometry = build(coords, num_levels)
    return geometry
