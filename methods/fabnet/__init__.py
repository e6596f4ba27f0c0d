"""FAb-Net and TCAE, the paper's video-flow baselines (TCAE is built on FAb-Net's code)."""
