"""The run's configuration: the schema, verl's keys, overrides, loading and --show-config."""
