"""Programs that drive both models and write results/: run them as `python -m experiments.<name>`."""
