"""Make an installed torchvision importable when its compiled ops cannot load.

open_clip needs torchvision at import time, and so does transformers (behind the MiniLM text
model) when torchvision is installed. PyPI's torchvision wheels are CUDA builds: next to a
CPU-only torch their ``_C`` extension fails to load (it links ``libtorch_cuda.so``). torchvision
tolerates that everywhere except ``_meta_registrations``, which registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally and so raises
``RuntimeError: operator torchvision::nms does not exist``.

:func:`ensure_torchvision_importable` imports torchvision and, only on exactly that failure,
declares the two operator schemas (no kernels) and imports it again. The pure-Python parts
(transforms) then work; compiled ops (nms, roi_align, image decoding) stay unavailable, and
relkd never calls them. With a matching torchvision (a GPU machine, or a CPU wheel from the
PyTorch index) the first import succeeds and nothing is changed. This module is the only
importer of torchvision in relkd_core.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

from relkd_core.errors import TeacherError

__all__ = ['ensure_torchvision_importable']

_LOG = logging.getLogger(__name__)
#: The schemas torchvision's _meta_registrations needs to exist; the library object must stay
#: alive for as long as the process runs, or torch drops the definitions again.
_PLACEHOLDER_LIBRARY: Any = None
_MISSING_OP = 'torchvision::nms'


def ensure_torchvision_importable() -> None:
    """Import torchvision if installed, declaring its missing op schemas when needed.

    A no-op when torchvision is not installed (the caller's own import then reports it) or was
    already imported. Raises TeacherError when torchvision fails to import for another reason.
    """
    global _PLACEHOLDER_LIBRARY
    if 'torchvision' in sys.modules or importlib.util.find_spec('torchvision') is None:
        return
    try:
        import torchvision
        return
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise TeacherError(f'torchvision is installed but fails to import: {err}') from err
    import torch

    # Forget the half-imported package so that the second import runs its __init__ from the top.
    for name in [m for m in sys.modules if m == 'torchvision' or m.startswith('torchvision.')]:
        del sys.modules[name]
    _LOG.info('torchvision compiled ops unavailable (CPU torch with a CUDA torchvision build); '
              'declaring nms/qnms schemas so that its Python parts import')
    library = torch.library.Library('torchvision', 'DEF')
    library.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    library.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _PLACEHOLDER_LIBRARY = library
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        raise TeacherError(f'torchvision fails to import even with its op schemas declared: '
                           f'{err}; install a torchvision build that matches torch '
                           f'{torch.__version__}') from err
