"""Small models shared by tests: a 16^2 spectral network with a random (untrained) filter."""

from __future__ import annotations

import torch

from diffinfer.diffusion import DiffusionModel, NoiseSchedule, UNetConfig
from diffinfer.fields import FieldConfig
from diffinfer.simulators import LognormalSimulator

SMALL_FIELD = FieldConfig(n_pix=16, box_size=125.0, depth=50.0)


def small_spectral_model(unet_scale: float) -> DiffusionModel:
    """A small spectral model (T = 50) with a random filter; ``unet_scale`` perturbs the
    U-Net's output layer (0: the network is its Wiener filter alone)."""
    sim = LognormalSimulator(SMALL_FIELD)
    torch.manual_seed(0)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), embed_dim=16, groups=4, spectral=True)
    model = DiffusionModel.from_config(cfg, NoiseSchedule(n_steps=50), sim.transform, SMALL_FIELD)
    with torch.no_grad():
        for name, p in model.denoiser.named_parameters():
            if name.startswith("spectral."):
                p.add_(0.3 * torch.randn_like(p))
            elif name.startswith("out."):
                p.add_(unet_scale * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    return model
