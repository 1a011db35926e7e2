"""DAE-Talker (Du et al., arXiv 2303.17550), re-implemented in this framework (a † row; BASELINES.md)."""
