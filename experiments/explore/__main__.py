"""`python -m experiments.explore`: start the latent explorer (see app.py)."""

from experiments.explore.app import main

if __name__ == "__main__":
    main()
