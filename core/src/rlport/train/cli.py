"""The ``rlport train`` command: ``run_train`` does the work, ``train_command`` is its typer face.

Wiring (in the lead's typer app)::

    app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        train_command
    )
"""

from __future__ import annotations

import sys
from typing import Any

from rlport.errors import RlportError


def build_config(
    overrides: list[str],
    *,
    demo: bool,
    config_file: str | None = None,
    prepare: bool = True,
    notes: list[str] | None = None,
) -> Any:
    """The configuration of a run: default, then the demo's settings (with ``--demo``), then the
    config file, then the overrides. With ``--demo`` (and ``prepare``) the tiny model and the data
    are built and the configuration points at them unless the user named their own."""
    from rlport.train.config.load import load_config

    if not demo:
        return load_config(overrides, config_file=config_file, notes=notes)
    from rlport.train.demo import DEMO_OVERRIDES, prepare_demo

    demo_overrides = [f"{k}={v}" for k, v in DEMO_OVERRIDES.items()]
    # The user's settings parse before the demo model is built, so a typo fails first.
    cfg = load_config([*demo_overrides, *overrides], config_file=config_file, notes=notes)
    if not prepare:
        return cfg
    model, train_file = prepare_demo(
        cfg.trainer.output_dir, length=cfg.rollout.max_new_tokens, seed=cfg.trainer.seed
    )
    if not cfg.model.path:
        cfg.model.path = str(model)
    if not cfg.data.train_files:
        cfg.data.train_files = [str(train_file)]
    return cfg


def run_train(
    overrides: list[str],
    demo: bool = False,
    *,
    config_file: str | None = None,
    show_config: bool | str = False,
    console: Any = None,
) -> int:
    """Run ``rlport train``; return the exit code (0 done, 2 bad input, 1 failed during the run).
    ``show_config``: print the configuration instead (``True`` or ``"rlport"``: rlport's keys,
    ``"verl"``: verl's names for them).

    Errors on the user's input are printed with their fix, no traceback."""
    from rlport.console import make_console, print_error

    console = console or make_console(stderr=True)
    try:
        from rlport.extras import require

        require("train", purpose="rlport train")  # every missing module of the extra, in one message
        if show_config:
            from rlport.train.config.show import rlport_yaml, verl_yaml

            cfg = build_config(overrides, demo=demo, config_file=config_file, prepare=False)
            print((verl_yaml if show_config == "verl" else rlport_yaml)(cfg), end="")
            return 0
        import rlport
        from rlport.train.driver.preflight import check_inputs

        # The configuration and the user's files are checked before the startup summary prints.
        notes: list[str] = []
        cfg = build_config(overrides, demo=demo, config_file=config_file, prepare=False, notes=notes)
        inputs = None if demo else check_inputs(cfg)  # the demo writes its data after init
        # Selection before the demo's model is built: the probes' environment (for example a switch
        # that keeps a vendor torch extension that cannot load here out of `import torch`) must be in
        # place before the first import of torch.
        rlport.init()
        if demo:
            cfg = build_config(overrides, demo=demo, config_file=config_file)
        for note in notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        from rlport.train.driver.trainer import Trainer

        trainer = Trainer(cfg, console=console, inputs=inputs)
    except RlportError as exc:
        print_error(console, exc.message, exc.fix)
        return 2
    try:
        trainer.fit()
    except RlportError as exc:
        print_error(console, exc.message, exc.fix, label="error during training")
        return 1
    return 0


def show_config_view(show_config: bool, args: list[str]) -> bool | str:
    """``--show-config verl``: the view named by the first extra argument (taken off ``args``)."""
    if show_config and args and args[0] in VIEWS:
        return args.pop(0)
    return show_config


VIEWS = ("rlport", "verl")


def train_command(
    ctx: Any,
    demo: bool = False,
    config: str | None = None,
    show_config: bool = False,
) -> None:
    """Run RL post-training (algorithm.adv_estimator: grpo, gae, ...): rlport train [--demo] [--config FILE] [--show-config] [key=value ...].

    typer signature proposal (annotations kept out of this module so importing it needs no typer)::

        def train(ctx: typer.Context,
                  demo: bool = typer.Option(False, "--demo", help="tiny model + synthetic task, no download"),
                  config: Optional[str] = typer.Option(None, "--config", help="YAML file, same layout"),
                  show_config: bool = typer.Option(False, "--show-config", help="print the resolved config")):
            raise typer.Exit(run_train(list(ctx.args), demo, config_file=config, show_config=show_config))
    """
    args = list(ctx.args)
    view = show_config_view(show_config, args)
    code = run_train(args, demo, config_file=config, show_config=view)
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """``python -m rlport.train [--demo] [--config FILE] [--show-config [rlport|verl]] [key=value ...]``.

    Overrides take Hydra's grammar and verl's key names, as ``python -m verl.trainer.main_ppo``
    does: ``data.train_files=[a.parquet] +trainer.val_before_train=False ~key``."""
    args = list(sys.argv[1:] if argv is None else argv)
    demo = "--demo" in args
    show: bool | str = False
    config_file = None
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--demo":
            continue
        if a == "--show-config":
            show = True
        elif a.startswith("--show-config="):
            show = a.split("=", 1)[1]
        elif a == "--config":
            config_file = next(it, None)
        elif a.startswith("--config="):
            config_file = a.split("=", 1)[1]
        elif a in ("-h", "--help"):
            print(main.__doc__)
            return 0
        else:
            rest.append(a)
    if show is True:
        show = show_config_view(True, rest)
    return run_train(rest, demo, config_file=config_file, show_config=show)
