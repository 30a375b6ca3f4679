"""The names a setting may take, where more than one module needs the list: estimators, policy losses,
KL kinds, loss aggregation modes, loggers, dtypes, rollout-correction levels.
"""

from __future__ import annotations

DTYPES = ("float32", "bfloat16", "float16")


#: ``algorithm.kl_penalty``: the per-token estimates of KL(actor || reference), as verl names them.
KL_PENALTIES = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


#: ``algorithm.kl_loss_type``: the same, and with ``+`` the straight-through kinds (verl's ``k3+``):
#: the kind's value, k2's gradient
KL_LOSS_TYPES = (*KL_PENALTIES, *(f"{k}+" for k in KL_PENALTIES))


LOGGERS = ("console", "jsonl", "tensorboard", "wandb", "mlflow", "swanlab")


#: ``algorithm.adv_estimator``s that give one advantage per sequence from its group (rollout.n >= 2)
GROUPED_ESTIMATORS = ("grpo", "rloo", "opo", "gpg", "grpo_passk")


#: ... that give per-token advantages without a critic
PER_TOKEN_ESTIMATORS = ("reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax")


ADV_ESTIMATORS = ("gae", *GROUPED_ESTIMATORS, *PER_TOKEN_ESTIMATORS)


#: verl's ``loss_agg_mode`` values (:mod:`rlport.train.algos.loss_agg`)
LOSS_AGG_MODES = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


#: ``algorithm.policy_loss``: verl's ``policy_loss.loss_mode`` values (:mod:`rlport.train.algos.policy_losses`)
POLICY_LOSSES = (
    "vanilla",
    "gspo",
    "gpg",
    "geo_mean",
    "cispo",
    "clip_cov",
    "kl_cov",
    "sapo",
    "dro",
    "dppo_tv",
    "dppo_kl",
)


#: ... whose loss is a mean over sequences whatever ``loss_agg_mode`` says (verl's geo_mean and sapo)
SEQUENCE_MEAN_LOSSES = ("geo_mean", "sapo")


#: ``algorithm.rollout_correction.rollout_is``: the importance weights' level
IS_LEVELS = (None, "token", "sequence")


#: ``algorithm.rollout_correction.loss_type``: the policy loss of bypass mode
BYPASS_LOSSES = ("ppo_clip", "reinforce")
