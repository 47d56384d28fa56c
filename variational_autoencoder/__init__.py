"""Convolutional variational autoencoder on MNIST."""
