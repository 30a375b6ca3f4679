"""``rlport train --demo``: a verifiable task a tiny random model learns in a few minutes on CPU.

Nothing is downloaded. The demo builds a tiny Qwen2 model with a character-level tokenizer
(:func:`rlport.rollout.tiny.build_tiny_model`), writes the task as parquet files in verl's layout,
and trains on them through the same path as any user's data.

The task, ``rlport/repeat_letter``: the prompt asks to repeat one letter ("repeat the letter c");
the reward is the share of the first ``length`` response characters that are that letter. A random
model scores about 1/100 per character; the reward only rises through GRPO, or PPO with a critic
(``algorithm.adv_estimator=gae``): no supervised warm-up.
"""

from __future__ import annotations

import random
from pathlib import Path

from rlport.train.data.rewards import DEMO_SOURCE

LETTERS = "abcd"
DEMO_OUTPUT = "outputs/rlport-demo"
#: the last-5 mean reward the demo reaches for every seed on every CPU kernel path
#: (benchmarks/demo_robustness.py prints the table)
REWARD_FLOOR = 0.95

#: The demo's configuration, applied before the user's overrides (which win).
DEMO_OVERRIDES: dict[str, str] = {
    "data.train_batch_size": "16",
    "data.max_prompt_length": "64",
    "rollout.n": "8",
    "rollout.max_new_tokens": "8",
    "rollout.max_model_len": "128",
    "rollout.temperature": "1.0",
    # 1e-3 with clip-higher (DAPO's asymmetric clip, 0.2 / 0.28): at 2e-3 with a symmetric clip one
    # prompt's answers could turn deterministic on a wrong letter before the right one was sampled
    # (reward 0.73 for seed 0 on AVX-512 kernels); benchmarks/demo_robustness.py checks every seed
    # 0-9 on every kernel path
    "actor.lr": "1e-3",
    "algorithm.clip_ratio_high": "0.28",
    "actor.micro_batch_size": "64",
    "actor.mini_batches": "4",
    "critic.lr": "1e-3",  # the value head starts random: it must catch up within a few steps
    "critic.micro_batch_size": "64",
    "algorithm.use_kl_loss": "false",
    "trainer.steps": "50",
    "trainer.output_dir": DEMO_OUTPUT,
}


def write_demo_data(folder: str | Path, *, length: int, copies: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.parquet`` and ``test.parquet`` for the repeat-letter task in verl's layout."""
    from rlport.extras import import_optional

    pa = import_optional("pyarrow", "train", purpose="writing the demo data")
    pq = import_optional("pyarrow.parquet", "train", purpose="writing the demo data")

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def rows(split: str, n: int) -> list[dict]:
        items = []
        for i in range(n):
            letter = LETTERS[i % len(LETTERS)]
            items.append(
                {
                    "data_source": DEMO_SOURCE,
                    "prompt": [{"role": "user", "content": f"repeat the letter {letter}"}],
                    "ability": "copy",
                    "reward_model": {"style": "rule", "ground_truth": letter},
                    "extra_info": {"split": split, "index": i, "length": length},
                }
            )
        rng.shuffle(items)
        return items

    train = out / "train.parquet"
    test = out / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows("train", copies * len(LETTERS))), train)
    pq.write_table(pa.Table.from_pylist(rows("test", len(LETTERS))), test)
    return train, test


def prepare_demo(output_dir: str | Path, *, length: int, seed: int = 0) -> tuple[Path, Path]:
    """Build the model and data under ``output_dir``; return the model folder and the training
    file."""
    from rlport.rollout.tiny import build_tiny_model
    from rlport.train.loading import quiet_transformers

    quiet_transformers()

    out = Path(output_dir)
    model = out / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model, vocab=None, hidden_size=128, heads=4, kv_heads=2, layers=2, seed=seed)
    train, _ = write_demo_data(out / "data", length=length, seed=seed)
    return model, train
