"""Plain nn.Module networks: the A2L denoiser, the L2I UNet, SyncNet, the scorers' landmarker and reduced SyncNet, and
baseline networks."""
