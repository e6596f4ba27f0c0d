"""FaceCycle (Chang, Chen, Chiu: "Learning Facial Representations from the Cycle-consistency of
Face", ICCV 2021), the strongest compared baseline of the paper's Table 1.

Modules, in reading order: ``networks`` (the five networks and the encoder's building blocks),
``losses`` (the official loss terms and the VGG19 they use), ``cycles`` (the model, the training
pairs and both cycles' losses), ``checkpoint`` (the authors' files) and ``method`` (the
registered ``facecycle`` method and its two training artifacts).
"""
