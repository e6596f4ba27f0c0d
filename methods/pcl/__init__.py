"""PCL (Liu et al., "Pose-disentangled Contrastive Learning for Self-supervised Facial
Representation", CVPR 2023), one of the face-specific baselines of LatentFace's Tables 1, 2 and 5.

Modules, in reading order: ``blocks`` (FaceCycle's encoder blocks, which PCL reuses),
``networks`` (PCL's encoder with its face and pose branches, projection heads, decoder),
``objective`` (the three losses and their augmentations), ``checkpoint`` (the authors' files)
and ``method`` (the registered ``pcl`` method and its training).
"""
