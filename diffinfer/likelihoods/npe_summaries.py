"""What an NPE reference sees of a map: its summaries, their embedding and the flow built on them.

The summaries (:data:`SUMMARIES`; a reference's card names one and holds its constants):

- ``"power"``: the standardised binned log power spectrum of the overdensity
  (:func:`~diffinfer.likelihoods.spectrum.spectrum_bins`);
- ``"power+cnn"``: the same and the map itself in model space (log density, standardised with
  constants fitted to the training maps), which a small periodic CNN
  (:class:`MapEmbedding`) embeds, trained jointly with the flow;
- ``"power+diffusion"``: the power spectrum and the diffusion likelihood's compression of
  the map, its located maximum and Fisher covariance
  (:mod:`diffinfer.likelihoods.compression`), standardised with constants fitted to the
  training maps; the card names the compressing model and its weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffinfer.diffusion.unet import PeriodicConv2d
from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig, as_maps
from diffinfer.fields.stats import power_spectrum
from diffinfer.fields.transform import Transform

SUMMARIES = ("power+cnn", "power", "power+diffusion")
"""The summaries an NPE reference can be trained on."""


def _import_sbi():
    try:
        from sbi.neural_nets import posterior_nn
    except ImportError as exc:
        raise ImportError(
            "NPE references need the sbi package: pip install 'diffinfer[npe]'"
        ) from exc
    return posterior_nn


class MapEmbedding(nn.Module):
    """Embedding of a summary vector [log P (n_bins), map (n_pix^2)] into features.

    The power-spectrum part passes through; the map part goes through a periodic CNN
    (circular padding, 2x2 average pooling after each stage, global mean), so its features
    do not change when the map is shifted periodically by a multiple of 2^len(channels)
    pixels (8 by default); other shifts change them slightly. (The ``"power"`` and
    ``"power+diffusion"`` summaries need no embedding.)

    Parameters
    ----------
    n_bins, n_pix
        Power-spectrum bins and map side.
    channels
        Channels of the convolution stages (each halves the map).
    n_features
        Features of the CNN embedding.
    """

    def __init__(self, n_bins: int, n_pix: int, channels: tuple[int, ...] = (8, 16, 32),
                 n_features: int = 16) -> None:  # fmt: skip
        super().__init__()
        self.n_bins, self.n_pix = n_bins, n_pix
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [PeriodicConv2d(c_in, c), nn.GELU(), PeriodicConv2d(c, c), nn.GELU(),
                       nn.AvgPool2d(2)]  # fmt: skip
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c_in, 64), nn.GELU(), nn.Linear(64, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        power = x[:, : self.n_bins]
        maps = x[:, self.n_bins :].reshape(-1, 1, self.n_pix, self.n_pix)
        features = self.head(self.conv(maps).mean(dim=(-2, -1)))
        return torch.cat([power, features], dim=-1)


def summarise(density: np.ndarray | torch.Tensor, card: dict,
              compressed: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """Summary vectors of density maps as a reference's ``card`` defines them, (M, dim).

    ``compressed``: the maps' compression (:func:`~diffinfer.likelihoods.compression.compress`
    under the card's compressor), where it was computed already; else it is computed here
    for the ``"power+diffusion"`` summary (a located maximum per map)."""
    field = FieldConfig.from_dict(card["field"])
    rho = as_maps(density, n_pix=field.n_pix, positive=True, what="density map")
    if rho.ndim == 2:
        rho = rho[None]
    edges = np.asarray(card["edges"])
    delta = rho / rho.mean(dim=(-2, -1), keepdim=True) - 1.0
    logp = np.log(power_spectrum(delta, field.box_size, edges=edges).power)
    logp = (logp - np.asarray(card["power_mean"])) / np.asarray(card["power_std"])
    parts = [torch.as_tensor(logp, dtype=torch.float32).reshape(len(rho), -1)]
    if card["summary"] == "power+cnn":
        y = Transform.from_dict(card["transform"]).forward(rho)
        parts.append(y.to(torch.float32).reshape(len(rho), -1))
    if card["summary"] == "power+diffusion":
        c = _compressed(rho, card, compressed)
        c = (c - np.asarray(card["compressed_mean"])) / np.asarray(card["compressed_std"])
        parts.append(torch.as_tensor(c, dtype=torch.float32))
    return torch.cat(parts, dim=-1)


def _compressed(rho: torch.Tensor, card: dict, compressed: np.ndarray | None) -> np.ndarray:
    """The maps' compression, given or computed under the card's compressor."""
    from diffinfer.likelihoods.compression import N_COMPRESSED, compress, compressor_model

    if compressed is None:
        entry = card["compressor"]
        return compress(rho, compressor_model(entry), seed=int(entry["seed"]),
                        n_timesteps=entry.get("n_timesteps"))  # fmt: skip
    compressed = np.asarray(compressed, np.float32)
    if compressed.shape != (len(rho), N_COMPRESSED):
        raise InputError(f"compressed summaries must have shape ({len(rho)}, {N_COMPRESSED}) "
                         f"for {len(rho)} maps, got {compressed.shape}")  # fmt: skip
    return compressed


def summary_dim(card: dict) -> int:
    """Length of a card's summary vector."""
    from diffinfer.likelihoods.compression import N_COMPRESSED

    field = FieldConfig.from_dict(card["field"])
    extra = {"power+cnn": field.n_pix**2, "power+diffusion": N_COMPRESSED}
    return len(card["edges"]) - 1 + extra.get(card["summary"], 0)


def build_estimator(card: dict) -> nn.Module:
    """The untrained flow and embedding that a card describes."""
    posterior_nn = _import_sbi()
    arch = card["architecture"]
    field = FieldConfig.from_dict(card["field"])
    n_bins = len(card["edges"]) - 1
    if card["summary"] == "power+cnn":
        embed: nn.Module = MapEmbedding(n_bins, field.n_pix,
                                        channels=tuple(arch["channels"]),
                                        n_features=int(arch["n_features"]))  # fmt: skip
    else:  # the summary is the flow's condition itself
        embed = nn.Identity()
    build = posterior_nn(model=arch["flow"], hidden_features=int(arch["hidden_features"]),
                         num_transforms=int(arch["num_transforms"]), embedding_net=embed,
                         z_score_x="none", z_score_theta="independent")  # fmt: skip
    box = field.prior
    theta = torch.as_tensor(np.random.default_rng(0).uniform(box.low, box.high, (64, 2)),
                            dtype=torch.float32)  # fmt: skip
    return build(theta, torch.zeros(64, summary_dim(card)))
