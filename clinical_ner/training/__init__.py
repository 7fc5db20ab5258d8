"""The training run: data pipeline, starting model, steps, callbacks, checkpoints, devices."""
