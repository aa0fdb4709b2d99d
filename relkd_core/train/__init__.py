"""Distillation training: config, batches, the loop, DDP set-up (``relkd-train``).

The loop lives in :mod:`.trainer`; the command line in :mod:`relkd_core.cli.train`.
"""

from relkd_core.train.config import AugmentConfig, DataConfig, OptimConfig, TrainConfig
from relkd_core.train.distributed import DistContext, init_distributed
from relkd_core.train.trainer import StepReport, TextSide, Trainer, TrainResult

__all__ = [
    'AugmentConfig',
    'DataConfig',
    'DistContext',
    'OptimConfig',
    'StepReport',
    'TextSide',
    'TrainConfig',
    'TrainResult',
    'Trainer',
    'init_distributed',
]
