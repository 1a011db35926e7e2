"""LightningModules: the stage-1 A2L and stage-2 L2I diffusion models, the dataset-trained scorers (and baselines)."""
