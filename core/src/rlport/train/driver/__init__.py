"""The single controller: the trainer and its step, validation, pre-flight checks."""
