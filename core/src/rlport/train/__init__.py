"""``rlport train``: GRPO post-training whose rollout, attention, collectives and memory go through
the active plugins. Imports here stay light; the trainer and its torch imports load on use.

Entry points: :func:`rlport.train.cli.run_train` (the command), :class:`rlport.train.trainer.Trainer`
(a run from a :class:`rlport.train.config.TrainConfig`), :func:`rlport.train.rewards.register`
(add a reward rule for a data source).
"""

from rlport.train import rewards
from rlport.train.config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config", "rewards"]
