"""verl's configuration keys beside rlport's own: the one table that says what each becomes.

verl's ``main_ppo`` takes ``actor_rollout_ref.actor.optim.lr=1e-6 trainer.n_gpus_per_node=8 ...``;
``rlport train`` takes the same keys. Every key of verl's composed ``ppo_trainer.yaml`` is covered
by one rule: mapped onto an rlport setting, accepted where rlport already behaves as the value
asks, or refused with the reason.

- :mod:`.rules`: the :class:`~.rules.Rule` type and its constructors (``Map``, ``Deprecated``,
  ``Accept``, ``Refuse``), the converters of verl's values, the reasons rows share;
- :mod:`.table`: ``RULES``, the table itself, and the verl version it covers;
- :mod:`.translate`: the table applied to one key (``translate``, ``rule_for``), verl's defaults,
  deprecated global counts per worker, the run under verl's names (``--show-config verl``);
- :mod:`.docs`: the tables generated into ``docs/from-verl.md``, and ``defaults.yaml``
  regenerated from a verl checkout (``python -m rlport.train.config.verl.docs PATH``);
- ``defaults.yaml``: verl's default of every key (comments dropped).

Each module imports only those above it in this list; import them by their own paths (nothing is
re-exported here).
"""
