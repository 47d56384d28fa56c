"""Building blocks shared by both models: data, networks, losses, training loop, checkpoints, figures, metrics."""
