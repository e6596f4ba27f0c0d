"""Unsup3D (Wu et al., CVPR 2020): the 3D latent autoencoder that is LatentFace stage 1.

Modules, in reading order: ``networks`` (encoders, decoders, confidence net), ``renderer``
(depth-grid mesh, rendering by warping), ``losses`` (calibrated photometric and perceptual
terms, depth error), ``model`` (``Unsup3D``: decomposition, both flip branches, Eq. 11) and
``method`` (the registered ``unsup3d`` method and the stage-1 artifact LatentFace reuses).
"""
