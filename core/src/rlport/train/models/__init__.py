"""What a rank trains: actor, critic, their shared wrapper, LoRA, schedules, loading."""
