"""Prompts from parquet and the rule-based rewards that score answers."""
