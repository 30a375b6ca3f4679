"""The ``rlport`` command. Starts whatever plugins are installed: a broken plugin is reported, never
a reason for the command itself to fail to start."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from rlport.console import make_console, print_error
from rlport.errors import RlportError

app = typer.Typer(
    help="rlport: LLM RL post-training on any accelerator. Plugins, conformance, training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = make_console()
err = make_console(stderr=True)


def _fail(exc: RlportError, code: int = 2) -> typer.Exit:
    print_error(err, exc.message, exc.fix)
    return typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        from rlport.versions import render

        print(render())  # plain text: names and versions from package metadata, no plugin loaded
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of rlport and of every installed rlport distribution.",
        ),
    ] = False,
) -> None:
    """rlport: LLM RL post-training on any accelerator. Plugins, conformance, training."""


def _quiet_init():  # type: ignore[no-untyped-def]
    """init() without the startup summary (the command prints it itself, to stdout)."""
    import rlport

    os.environ["RLPORT_SUMMARY"] = "0"
    return rlport.init()


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    import_targets: Annotated[
        bool,
        typer.Option(
            "--import-targets",
            help="Import the module of every pending patch first, then show whether each applied.",
        ),
    ] = False,
) -> None:
    """Show the startup summary: the chosen device plugin and why, who serves each hook, patches."""
    from rlport import summary

    try:
        runtime = _quiet_init()
        if import_targets:
            from rlport.patches import get_manager

            get_manager().import_targets()
    except RlportError as exc:
        raise _fail(exc) from None
    data = summary.collect(runtime)
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        out.print(summary.render(data))


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List every installed plugin: distribution, version, kind, status (with reason) and hooks."""
    from rlport import bootstrap
    from rlport import runtime as runtime_mod
    from rlport.selection import select

    try:
        settings, records = bootstrap.build()
    except RlportError as exc:
        raise _fail(exc) from None
    problem: RlportError | None = None
    try:  # the device info names the collectives backend, which decides the fabric plugins
        runtime_mod.Runtime(settings, records, select(records, settings))
    except RlportError as exc:
        problem = exc
    except Exception as exc:  # a device plugin whose device info raises must not hide the table
        problem = RlportError(
            f"the selected device plugin failed to describe its device: {type(exc).__name__}: {exc}",
            "run `rlport doctor`, or choose another plugin: export RLPORT_DEVICE=cpu",
        )
    if as_json:
        print(
            json.dumps(
                {
                    "plugins": [r.to_json() for r in records],
                    "selection_error": str(problem) if problem else None,
                },
                indent=2,
            )
        )
    else:
        table = Table(title="rlport plugins", title_justify="left")
        for column in ("name", "distribution", "kind", "status", "priority", "reason / fix", "hooks"):
            table.add_column(column, overflow="fold")
        colour = {"active": "green", "broken": "red", "unavailable": "yellow", "disabled": "dim"}
        for r in records:
            reason = r.reason + (f"\nfix: {r.fix}" if r.fix and r.status in ("broken", "disabled") else "")
            table.add_row(  # every cell is Text: names and reasons come from plugins, never markup
                Text(r.name),
                Text(f"{r.distribution} {r.version}"),
                Text(r.kind or "?"),
                Text(r.status, style=colour.get(r.status, "")),
                Text("" if r.priority is None else str(r.priority)),
                Text(reason),
                Text(", ".join(h.removeprefix("rlport_") for h in r.hooks)),
            )
        out.print(table)
    if problem is not None:
        raise _fail(problem)


@app.command()
def doctor() -> None:
    """Check plugins, selection, stack versions, environment and patches; exit 1 on any problem."""
    from rlport.doctor import diagnose

    os.environ["RLPORT_SUMMARY"] = "0"
    findings = diagnose()
    if not findings:
        out.print("[green]no problems found[/]")
        return
    for f in findings:
        print_error(out, f.problem, f.fix, label=f.check)
    out.print(Text(f"{len(findings)} problem(s)", style="red"))
    raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    demo: Annotated[
        bool, typer.Option("--demo", help="Tiny local model and synthetic task; no download.")
    ] = False,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML file in rlport's or verl's layout.")
    ] = None,
    show_config: Annotated[
        bool,
        typer.Option(
            "--show-config", help="Print the resolved configuration (`--show-config verl`: verl's key names)."
        ),
    ] = False,
) -> None:
    """RL post-training, GRPO by default (PPO: algorithm.adv_estimator=gae): rlport train [--demo]
    [--config FILE] \\[key=value ...] (dotted overrides, e.g. data.train_files=train.parquet
    rollout.engine=vllm trainer.steps=50)."""
    from rlport.train.cli import run_train, show_config_view

    args = list(ctx.args)
    view = show_config_view(show_config, args)
    raise typer.Exit(run_train(args, demo, config_file=config, show_config=view))


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. mychip (package rlport-mychip).")],
    dest: Annotated[Path, typer.Option(help="Folder to create the package in.")] = Path("."),
) -> None:
    """Create a device-plugin package that installs and runs on the host before you write a hook."""
    from rlport.scaffold import new_plugin as make

    try:
        root = make(name, dest)
    except RlportError as exc:
        raise _fail(exc) from None
    out.print(Text(f"created {root}\n  next: pip install -e {root} && rlport plugins"))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def conformance(ctx: typer.Context) -> None:
    """Run the conformance suite (rlport-conformance): `rlport conformance --plugin NAME --report out.json`,
    `rlport conformance verify out.json`. Pass --help for its options."""
    try:
        from rlport_conformance.cli import main as run
    except ModuleNotFoundError as exc:
        if exc.name != "rlport_conformance":
            raise  # the suite is installed but broken: show the real error
        raise _fail(
            RlportError(
                "the conformance suite is not installed (distribution rlport-conformance)",
                "pip install ./conformance   (from a checkout of the rlport repository)",
            )
        ) from None
    raise typer.Exit(run(list(ctx.args)))


def main() -> None:
    try:
        app()
    except RlportError as exc:  # anything a command did not catch still prints its fix
        print_error(err, exc.message, exc.fix)
        sys.exit(2)
