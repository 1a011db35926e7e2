"""dreamhead-lit: train, benchmark and ablate hierarchical diffusion talking heads with PyTorch Lightning."""

__version__ = "0.1.0"
