"""How many of verl's own example commands rlport's configuration loads, and what stops the rest.

    python benchmarks/verl_example_commands.py PATH/TO/verl            # a checkout of verl
    python benchmarks/verl_example_commands.py PATH/TO/verl --verbose  # each failing script's error

Reads every ``examples/*_trainer/*.sh`` that runs ``verl.trainer.main_ppo``, joins its continued
lines, substitutes the script's own simple ``NAME=value`` assignments for ``$NAME`` / ``${NAME}``
(and computes ``$((a * b))``; a positional ``${1:-default}`` is its default, as when the script
runs without arguments),
sets the engine's tensor parallel size and ``trainer.n_gpus_per_node`` to 1 (one device per
worker, as a run on one machine would), and hands the overrides to
:func:`rlport.train.config.schema.load_config`. Prints how many load, then the keys that stop the others,
most frequent first (a key counts once per script). Nothing is run and no model is loaded.
"""

from __future__ import annotations

import argparse
import collections
import re
import shlex
import sys
from pathlib import Path

from rlport.errors import ConfigError
from rlport.train.config.load import load_config

ONE = ("tensor_model_parallel_size", "n_gpus_per_node")
ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(\S*)\s*(?:#.*)?$")
VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*|\d+)(?::-([^}]*))?\}|\$([A-Za-z_]\w*)")
KEY_IN_ERROR = re.compile(r"(?:verl key|config key) '([^']+)'")
ARITHMETIC = re.compile(r"\$\(\(([^()]*)\)\)")


def _value(m: re.Match[str], env: dict[str, str]) -> str:
    """``$NAME``, ``${NAME}`` or ``${NAME:-default}`` as the script sets it; ``X`` when unset."""
    name = m.group(1) or m.group(3)
    return env.get(name, m.group(2) if m.group(2) is not None else "X")


def _arithmetic(expr: str, env: dict[str, str]) -> str:
    """``$((a * 3))`` as the shell computes it: names from ``env``, integers, + - * / only."""
    expr = re.sub(r"\$?\{?([A-Za-z_]\w*)\}?", lambda m: env.get(m.group(1), "X"), expr)
    if not re.fullmatch(r"[\d\s+*/()-]+", expr):
        return "X"
    return str(eval(compile(expr.replace("/", "//"), "<arithmetic>", "eval"), {"__builtins__": {}}))


def command_of(script: str) -> list[str] | None:
    """The ``key=value`` overrides the script passes to ``main_ppo``, or None if it runs none."""
    text = script.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():  # in order: an assignment may use the ones above it
        line = ARITHMETIC.sub(lambda m: _arithmetic(m.group(1), env), line)
        m = ASSIGNMENT.match(line)
        if m:
            env[m.group(1)] = VARIABLE.sub(lambda v: _value(v, env), m.group(2).strip("\"'"))
    line = next((x for x in text.splitlines() if "verl.trainer.main_ppo" in x), None)
    if line is None:
        return None
    cmd = line.split("verl.trainer.main_ppo", 1)[1]
    for _ in range(3):  # values that name other variables
        cmd = VARIABLE.sub(lambda m: _value(m, env), cmd)
        cmd = ARITHMETIC.sub(lambda m: _arithmetic(m.group(1), env), cmd)
    cmd = cmd.split(" 2>&1")[0].split(" | ")[0].replace("$@", "")
    try:
        words = shlex.split(cmd, comments=True)
    except ValueError:
        return None
    args = [w for w in words if "=" in w and not w.startswith("-")]
    return [a.split("=", 1)[0] + "=1" if a.split("=", 1)[0].endswith(ONE) else a for a in args]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("verl", type=Path, help="a checkout of verl (its examples/ folder is read)")
    parser.add_argument("--verbose", action="store_true", help="print each failing script's error")
    opts = parser.parse_args()
    scripts = sorted((opts.verl / "examples").glob("*_trainer/*.sh"))
    if not scripts:
        print(f"no examples/*_trainer/*.sh under {opts.verl}", file=sys.stderr)
        return 2
    stoppers: collections.Counter[str] = collections.Counter()
    loaded = tried = 0
    for path in scripts:
        args = command_of(path.read_text(errors="replace"))
        if args is None:
            continue
        tried += 1
        try:
            load_config(args)
            loaded += 1
        except ConfigError as err:
            stoppers.update(set(KEY_IN_ERROR.findall(err.message)))
            if opts.verbose:
                print(f"== {path.relative_to(opts.verl)}\n{err.message}\n")
    print(f"{loaded} of {tried} example commands load")
    for key, n in stoppers.most_common():
        print(f"{n:4d}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
