"""``rlport train``: GRPO post-training whose rollout, attention, collectives and memory go through
the active plugins. Imports here stay light; the trainer and its torch imports load on use.

Entry points: :func:`rlport.train.cli.run_train` (the command), :class:`rlport.train.driver.trainer.Trainer`
(a run from a :class:`rlport.train.config.schema.TrainConfig`), :func:`rlport.train.data.rewards.register`
(add a reward rule for a data source).
"""

from rlport.train.config.load import load_config
from rlport.train.config.schema import TrainConfig
from rlport.train.data import rewards

__all__ = ["TrainConfig", "load_config", "rewards"]
