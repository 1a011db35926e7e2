"""Plain nn.Module networks: the A2L denoiser, the L2I UNet, SyncNet and baseline networks."""
