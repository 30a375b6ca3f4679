"""Rollout throughput of rlport's engines, each against the raw engine it wraps, on one tiny model.

Run: ``python benchmarks/bench_rollout.py --engine hf`` (system Python), or in an environment with
vLLM (``pip install "rlport[vllm]"``) ``python benchmarks/bench_rollout.py`` for both engines;
``--vllm-env VLLM_CPU_NUM_OF_RESERVED_CPU=1`` measures vLLM's own default of one reserved core.

Each engine is made through ``rlport.current().make_engine(name, config)``, as the trainer makes it.
It then generates ``--prompts`` random prompts of ``--prompt-len`` tokens, ``--n`` samples each, exactly
``--new-tokens`` tokens per sample (no stop ids), sampling at temperature 1 with a seed, as a
training step does. The first generate is timed apart (vLLM warms up there). Then, ``--rounds``
times, the rlport call and the raw call alternate, and the figures are medians:

- raw ``vllm``: the engine's own ``vllm.LLM.generate`` called directly with exactly the arguments
  the adapter passes it (``VLLMEngine.requests``: one seeded request per sample), so the ratio is
  the adapter's cost (seed derivation, checks, output conversion);
- raw ``hf``: ``transformers``' ``model.generate`` on the engine's own model (same weights, same
  attention), ``do_sample`` with ``num_return_sequences=n``, ``min_new_tokens`` so every sample is
  as long, and the per-step logits returned and turned into the sampled tokens' logprobs as the
  adapter does; so the ratio compares rlport's decode loop with transformers'.

``rlport/raw`` is the raw median time over rlport's (above 1: rlport's engine is faster); the paired
column is the median of the per-round ratios. The engines run one after the other (the HF engine
first), never at the same time; the last column says on how many prompts their greedy continuations
are identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("RLPORT_SUMMARY", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@dataclass
class Result:
    engine: str
    startup_s: float
    first_s: float
    ours_s: list[float]
    raw_s: list[float]
    tokens: int
    greedy: list[list[int]]

    @property
    def median_s(self) -> float:
        return statistics.median(self.ours_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median_s

    @property
    def ratio(self) -> float:
        return statistics.median(self.raw_s) / self.median_s

    @property
    def paired_ratio(self) -> float:
        return statistics.median(r / o for r, o in zip(self.raw_s, self.ours_s, strict=True))


def parse_option(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    value: object = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    elif raw.lstrip("-").isdigit():
        value = int(raw)
    return key, value


def raw_call(engine: Any, prompts: list[list[int]], params: Any) -> Callable[[], int]:
    """The raw engine under ``engine``, called directly with the same arguments; returns a call that
    generates and gives the number of tokens it produced."""
    if engine.name == "vllm":
        inputs, sampling = engine.requests(prompts, params)

        def call() -> int:
            outs = engine.llm.generate(inputs, sampling, use_tqdm=False)
            return sum(len(c.token_ids) for o in outs for c in o.outputs)

        return call
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=engine.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=engine.device)

    def call() -> int:
        with torch.no_grad():
            out = engine.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=params.temperature,
                top_k=0,
                top_p=1.0,
                num_return_sequences=params.n,
                max_new_tokens=params.max_new_tokens,
                min_new_tokens=params.max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
            )
        new = out.sequences[:, width:]
        logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        logp.gather(-1, new[..., None]).squeeze(-1).tolist()
        return new.numel()

    return call


def run_engine(name: str, model: str, prompts: list[list[int]], args: argparse.Namespace) -> Result:
    import rlport
    from rlport.rollout import EngineConfig, SamplingParams
    from rlport.rollout.seeding import step_seed

    options = dict(parse_option(o) for o in args.vllm_option) if name == "vllm" else {}
    if name == "vllm" and args.vllm_env:
        options["env"] = dict(e.partition("=")[::2] for e in args.vllm_env)
    config = EngineConfig(model=model, max_model_len=args.prompt_len + args.new_tokens + 8, options=options)
    start = time.perf_counter()
    engine = rlport.current().make_engine(name, config)
    startup = time.perf_counter() - start
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.new_tokens, seed=step_seed(0, 0))
    raw = raw_call(engine, prompts, params)
    start = time.perf_counter()
    engine.generate(prompts, params)
    first = time.perf_counter() - start
    raw()  # the raw path's own warm-up (transformers' generate builds its caches on the first call)
    ours_s, raw_s, tokens = [], [], 0
    for _ in range(args.rounds):
        start = time.perf_counter()
        out = engine.generate(prompts, params)
        ours_s.append(time.perf_counter() - start)
        tokens = sum(len(g.token_ids) for gens in out for g in gens)
        start = time.perf_counter()
        raw_tokens = raw()
        raw_s.append(time.perf_counter() - start)
        if raw_tokens != tokens:
            raise SystemExit(f"{name}: rlport generated {tokens} tokens, the raw call {raw_tokens}")
    greedy = [
        g[0].token_ids for g in engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
    ]
    engine.shutdown()
    return Result(name, startup, first, ours_s, raw_s, tokens, greedy)


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
    parser.add_argument("--rounds", type=int, default=7, help="timed calls of each side (medians)")
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
    parser.add_argument(
        "--vllm-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="variable for vLLM's processes (the engine's env option), e.g. VLLM_CPU_NUM_OF_RESERVED_CPU=1",
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
        f"(prompt {args.prompt_len} tokens; hidden {args.hidden}, {args.layers} layers; "
        f"medians of {args.rounds} calls)"
    )
    for column in (
        "engine",
        "startup s",
        "first generate s",
        "generate s",
        "tokens/s",
        "raw generate s",
        "rlport/raw",
        "paired",
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
            f"{r.median_s:.3f}",
            f"{r.tokens_per_s:,.0f}",
            f"{statistics.median(r.raw_s):.3f}",
            f"{r.ratio:.3f}x",
            f"{r.paired_ratio:.3f}x",
            same,
        )
    console = make_console()
    console.print(table)
    load = os.getloadavg()
    reserved = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") or next(
        (e.partition("=")[2] for e in args.vllm_env if e.startswith("VLLM_CPU_NUM_OF_RESERVED_CPU=")),
        "0 (the cpu plugin's default)",
    )
    console.print(
        f"host: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"(1/5/15 min); VLLM_CPU_NUM_OF_RESERVED_CPU={reserved}",
        markup=False,
    )


if __name__ == "__main__":
    main()
