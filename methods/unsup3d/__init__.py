"""Unsup3D (Wu et al., CVPR 2020): the 3D latent autoencoder that is LatentFace stage 1."""
