"""The network: presets, the decision encoder + trajectory transformer, loss and metrics."""
