"""PCL (Liu et al., "Pose-disentangled Contrastive Learning for Self-supervised Facial
Representation", CVPR 2023), one of the face-specific baselines of LatentFace's Tables 1, 2 and 5.

Modules, in reading order: ``networks`` (PCL's encoder, built from FaceCycle's in
``methods/facecycle/networks.py``, with its face and pose branches; projection heads, decoder),
``objective`` (the three losses and their augmentations), ``checkpoint`` (the authors' files)
and ``method`` (the registered ``pcl`` method and its training).
"""
