"""LatentFace (paper Sec. 2): Unsup3D stage 1 plus the Representation Diffusion Model (stage 2)."""
