"""The library both models' train.py and plot.py use: networks, data, the loop and run-keeping, checkpoints, codes, figures."""
