"""Training: the `train` function and its options, the two phases, callbacks, schedules.

`imgclf.training.config` (options and their check), `imgclf.training.phases` (build and
compile, fine-tune, fit), `imgclf.training.train` (a whole run), `imgclf.training.callbacks`,
`imgclf.training.schedules`, `imgclf.training.losses`, resuming a killed run
(`imgclf.training.backup`, `imgclf.training.identity`; docs/resume.md), and for several devices
or machines `imgclf.training.strategies`, `imgclf.training.distributed` and
`imgclf.training.multi_worker_fit`.
"""

from imgclf.training.callbacks import ModelCheckpoint
from imgclf.training.config import TrainingConfig, TrainingPlan, plan_training
from imgclf.training.phases import build_model, compile_model, fit_phase, start_fine_tuning
from imgclf.training.train import TrainingResult, train

__all__ = [
    "ModelCheckpoint",
    "TrainingConfig",
    "TrainingPlan",
    "TrainingResult",
    "build_model",
    "compile_model",
    "fit_phase",
    "plan_training",
    "start_fine_tuning",
    "train",
]
