"""Training with the DeepSpeed engine: config resolution (ds_config.py); the trainer lands next."""
