"""The engine under every pipeline: runtime, the training step and loop, resumable epochs, checkpoints, records,
schedules and configuration-generated command lines."""
