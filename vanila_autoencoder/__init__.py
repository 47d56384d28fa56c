"""Plain convolutional autoencoder on MNIST."""
