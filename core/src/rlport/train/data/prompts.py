"""Prompts from parquet files in verl's layout, tokenised with the model's chat template.

Columns, as verl's data-preprocessing scripts write them:

- ``prompt``: a list of chat messages ``{"role": ..., "content": ...}``
- ``data_source``: names the reward rule
- ``reward_model``: ``{"ground_truth": ..., "style": "rule"}``
- ``extra_info``: anything (a dict), handed to the reward function

The sampler walks the prompts in a seeded order, epoch after epoch, and its position is part of a
checkpoint so a resumed run continues with the next batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError

REQUIRED_COLUMNS = ("data_source", "reward_model")


@dataclass
class Example:
    index: int
    messages: list[dict[str, str]]
    data_source: str
    ground_truth: Any
    extra_info: Any
    prompt_ids: list[int] = field(default_factory=list)


def read_parquet(
    paths: list[str], prompt_key: str = "prompt", *, key: str = "data.train_files"
) -> list[Example]:
    """Read every row of ``paths`` (the setting ``key``); errors name the file, the column and the
    fix. A prompt given as a plain string is one user message."""
    from rlport.extras import import_optional

    pq = import_optional("pyarrow.parquet", "train", purpose="reading parquet data")
    if not paths:
        raise ConfigError(f"{key} is empty", f"rlport train {key}=[train.parquet] (or rlport train --demo)")
    out: list[Example] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"data file '{p}' does not exist ({key})",
                f"rlport train {key}=[/path/to/train.parquet] (checked {p.resolve()})",
            )
        try:
            table = pq.read_table(p)
        except Exception as exc:
            raise ConfigError(
                f"data file '{p}' is not a readable parquet file: {exc}",
                "write it with pandas.DataFrame.to_parquet",
            ) from exc
        missing = [c for c in (prompt_key, *REQUIRED_COLUMNS) if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"data file '{p}' lacks column(s) {missing}; it has {table.column_names}",
                "write verl's layout: prompt (chat messages), data_source, reward_model={'ground_truth': ...}"
                + (
                    f", or set data.prompt_key=<column> (now {prompt_key!r})" if prompt_key in missing else ""
                ),
            )
        for row in table.to_pylist():
            messages = row[prompt_key]
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and "content" in m for m in messages
            ):
                raise ConfigError(
                    f"data file '{p}' row {len(out)}: column {prompt_key!r} must be a list of chat messages, got {messages!r:.80}",
                    "write prompts as [{'role': 'user', 'content': '...'}]",
                )
            rm = row["reward_model"] or {}
            if not isinstance(rm, dict) or "ground_truth" not in rm:
                raise ConfigError(
                    f"data file '{p}' row {len(out)}: reward_model must be a mapping with 'ground_truth', got {rm!r:.80}",
                    "write reward_model={'ground_truth': ..., 'style': 'rule'}",
                )
            out.append(
                Example(
                    index=len(out),
                    messages=[{"role": m.get("role") or "user", "content": m["content"]} for m in messages],
                    data_source=str(row["data_source"]),
                    ground_truth=rm["ground_truth"],
                    extra_info=row.get("extra_info"),
                )
            )
    if not out:
        raise ConfigError(f"data files {paths} hold no rows", "give parquet files with at least one prompt")
    return out


def limit(examples: list[Example], n: int, *, shuffle: bool, seed: int) -> list[Example]:
    """At most ``n`` of ``examples`` (``data.train_max_samples``; 0: all): a draw seeded by ``seed``
    when ``shuffle``, else the first ``n``; in file order either way."""
    if n <= 0 or n >= len(examples):
        return examples
    if not shuffle:
        return examples[:n]
    import random

    chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in chosen]


def tokenize(
    examples: list[Example],
    tokenizer: Any,
    max_prompt_length: int,
    template_kwargs: dict[str, Any] | None = None,
) -> tuple[list[Example], int]:
    """Fill ``prompt_ids`` with the chat template applied (generation prompt added, and
    ``template_kwargs``: ``data.apply_chat_template_kwargs``); drop prompts longer than
    ``max_prompt_length``. Returns the kept examples and how many were dropped."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the model's tokenizer has no chat template, so chat-message prompts cannot be formatted",
            "use an instruct model folder whose tokenizer_config.json has a chat_template",
        )
    kept: list[Example] = []
    longest = 0
    for ex in examples:
        ids = tokenizer.apply_chat_template(
            ex.messages, add_generation_prompt=True, tokenize=True, **(template_kwargs or {})
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = list(ids)
        longest = max(longest, len(ids))
        if len(ids) <= max_prompt_length:
            ex.prompt_ids = ids
            kept.append(ex)
    if not kept:
        raise ConfigError(
            f"every prompt is longer than data.max_prompt_length={max_prompt_length} tokens "
            f"(the longest has {longest})",
            f"rlport train data.max_prompt_length={longest} (keeps every prompt)",
        )
    return kept, len(examples) - len(kept)


class Sampler:
    """Batches of examples in a seeded order; epochs reshuffle. ``state()``/``restore()`` resume."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def next_batch(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch_size:
            if self.cursor >= self.n:
                self.epoch += 1
                self.cursor = 0
                self._order = self._make_order()
            take = min(self.batch_size - len(out), self.n - self.cursor)
            out.extend(self._order[self.cursor : self.cursor + take])
            self.cursor += take
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._make_order()
