"""Rollout throughput: the HF engine against vLLM on the same prompts and the same tiny model.

Run: ``python benchmarks/bench_rollout.py --engine hf`` (system Python), or in an environment with
vLLM (``pip install "rlport[vllm]"``) ``python benchmarks/bench_rollout.py`` for both engines.

Each engine is made through ``rlport.current().make_engine(name, config)``, as the trainer makes it.
It then generates ``--prompts`` random prompts of ``--prompt-len`` tokens, ``--n`` samples each, exactly
``--new-tokens`` tokens per sample (no stop ids), sampling at temperature 1 with a fixed seed. The
first generate is timed apart (vLLM warms up there); the figure is the best of ``--rounds`` later
calls. The engines run one after the other (the HF engine first), never at the same time, and the
last column says on how many prompts their greedy continuations are identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("RLPORT_SUMMARY", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@dataclass
class Result:
    engine: str
    startup_s: float
    first_s: float
    best_s: float
    tokens: int
    greedy: list[list[int]]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.best_s


def parse_option(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    value: object = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    elif raw.lstrip("-").isdigit():
        value = int(raw)
    return key, value


def run_engine(name: str, model: str, prompts: list[list[int]], args: argparse.Namespace) -> Result:
    import rlport
    from rlport.rollout import EngineConfig, SamplingParams

    options = dict(parse_option(o) for o in args.vllm_option) if name == "vllm" else {}
    config = EngineConfig(model=model, max_model_len=args.prompt_len + args.new_tokens + 8, options=options)
    start = time.perf_counter()
    engine = rlport.current().make_engine(name, config)
    startup = time.perf_counter() - start
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.new_tokens, seed=0)
    start = time.perf_counter()
    engine.generate(prompts, params)
    first = time.perf_counter() - start
    best, tokens = float("inf"), 0
    for _ in range(args.rounds):
        start = time.perf_counter()
        out = engine.generate(prompts, params)
        best = min(best, time.perf_counter() - start)
        tokens = sum(len(g.token_ids) for gens in out for g in gens)
    greedy = [
        g[0].token_ids for g in engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
    ]
    engine.shutdown()
    return Result(name, startup, first, best, tokens, greedy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    vllm_installed = importlib.util.find_spec("vllm") is not None
    parser.add_argument(
        "--engine", choices=("hf", "vllm", "both"), default="both" if vllm_installed else "hf"
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--hidden", type=int, default=128, help="hidden size of the tiny model (head size 32)"
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--vllm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra vllm.LLM argument, e.g. enforce_eager=true",
    )
    args = parser.parse_args()

    from rich.table import Table

    from rlport.console import make_console
    from rlport.rollout.tiny import build_tiny_model

    engines = ["hf", "vllm"] if args.engine == "both" else [args.engine]
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="rlport-bench-rollout-") as tmp:
        heads = args.hidden // 32
        model = str(
            build_tiny_model(
                f"{tmp}/model",
                vocab=None,
                hidden_size=args.hidden,
                heads=heads,
                kv_heads=max(1, heads // 2),
                layers=args.layers,
            )
        )
        prompts = [
            [1] + [rng.randrange(3, 100) for _ in range(args.prompt_len - 1)] for _ in range(args.prompts)
        ]
        results = [run_engine(name, model, prompts, args) for name in engines]

    table = Table(
        title=f"rollout: {args.prompts} prompts x {args.n} samples x {args.new_tokens} new tokens "
        f"(prompt {args.prompt_len} tokens; hidden {args.hidden}, {args.layers} layers)"
    )
    for column in (
        "engine",
        "startup s",
        "first generate s",
        "generate s (best)",
        "tokens/s",
        "greedy same as hf",
    ):
        table.add_column(column, justify="left" if column == "engine" else "right")
    reference = results[0].greedy if results[0].engine == "hf" else None
    for r in results:
        same = (
            "-"
            if reference is None or r.engine == "hf"
            else f"{sum(a == b for a, b in zip(reference, r.greedy, strict=True))}/{len(r.greedy)}"
        )
        table.add_row(
            r.engine,
            f"{r.startup_s:.1f}",
            f"{r.first_s:.2f}",
            f"{r.best_s:.3f}",
            f"{r.tokens_per_s:,.0f}",
            same,
        )
    make_console().print(table)
    load = os.getloadavg()
    make_console().print(
        f"host: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)"
    )


if __name__ == "__main__":
    main()
