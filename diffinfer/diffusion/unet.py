"""A conditional U-Net for epsilon-prediction on periodic maps.

Every spatial operation is periodic: 3x3 convolutions use circular padding, downsampling is a
strided circular convolution, upsampling is nearest-neighbour followed by a circular
convolution, and attention is global. The network therefore commutes with periodic shifts by
multiples of 2^(number of downsamplings) pixels (smaller shifts change the stride phase), and it
is fully convolutional: weights trained at 64^2 apply at 256^2.

The timestep enters through a sinusoidal embedding and an MLP; theta, normalised to the unit
box of the prior, enters through its own MLP added to the time embedding, and the sum
conditions every residual block (scale and shift of its normalised activations).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.diffusion.spectral import SpectralBranch
from diffinfer.errors import InputError
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`.

    Parameters
    ----------
    base_channels
        Channels at full resolution.
    channel_mults
        Channel multiplier per resolution level; len - 1 downsamplings.
    blocks_per_level
        Residual blocks per level on the way down (and up).
    attention_levels
        Levels (0 = full resolution) with a global self-attention block.
    embed_dim
        Width of the time/theta embedding.
    groups
        Groups of the group normalisation.
    spectral
        Add the learned Fourier-space Wiener filter of
        :class:`~diffinfer.diffusion.spectral.SpectralBranch` to the output, so that the
        U-Net learns only the non-Gaussian rest (needs the noise schedule).
    prior
        Parameter box; theta is mapped to its unit square before it enters the network.
    """

    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = ()
    embed_dim: int = 128
    groups: int = 8
    spectral: bool = False
    prior: PriorBox = field(default_factory=lambda: DEFAULT_PRIOR)

    def to_dict(self) -> dict:
        """JSON-ready description."""
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_levels"] = list(self.attention_levels)
        d["prior"] = self.prior.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["channel_mults"] = tuple(d["channel_mults"])
        d["attention_levels"] = tuple(d.get("attention_levels", ()))
        d["prior"] = PriorBox.from_dict(d["prior"]) if "prior" in d else DEFAULT_PRIOR
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (integer or real) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float().reshape(-1, 1) * freqs.to(t.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class _CircularPad(torch.autograd.Function):
    """Periodic padding by one pixel on each side of the last two axes.

    The same values as ``F.pad(x, (1, 1, 1, 1), mode="circular")``; its gradient folds the
    four borders back onto the edges they copy, in place of autograd's path through the
    slices of that padding (a zero tensor and a copy per slice), which took about 40 % of a
    small CNN's training step on a CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (1, 1, 1, 1), mode="circular")

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        gx = g[..., 1:-1, :].clone()  # rows: fold the padded rows onto the rows they copy
        gx[..., 0, :] += g[..., -1, :]
        gx[..., -1, :] += g[..., 0, :]
        out = gx[..., :, 1:-1].clone()  # then the columns (the corners come with the rows)
        out[..., :, 0] += gx[..., :, -1]
        out[..., :, -1] += gx[..., :, 0]
        return out


class PeriodicConv2d(nn.Conv2d):
    """A 3x3 convolution on the periodic square: circular padding by one pixel, then the
    convolution (strided for downsampling). The same function and parameters as
    ``nn.Conv2d(c_in, c_out, 3, stride, padding=1, padding_mode="circular")``, with a faster
    gradient; weights of either load into the other."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(c_in, c_out, 3, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            padded = _CircularPad.apply(x)
        else:  # no gradient to take: the plain padding, without a custom function's overhead
            padded = nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
        return self._conv_forward(padded, self.weight, self.bias)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return PeriodicConv2d(c_in, c_out, stride=stride)


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding by a scale and shift (FiLM)."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = _conv(c_in, c_out)
        self.film = nn.Linear(embed_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = _conv(c_out, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(nn.functional.silu(h))
        return self.skip(x) + h


class Attention(nn.Module):
    """Global multi-head self-attention over all pixels (shift-equivariant)."""

    def __init__(self, channels: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """Conditional epsilon-prediction U-Net with periodic boundaries.

    ``forward(x_t, t, theta)``: maps (B, 1, N, N), integer timesteps (B,), parameters (B, 2)
    in physical units -> predicted noise (B, 1, N, N). N must be divisible by
    2^(len(channel_mults) - 1).

    Parameters
    ----------
    config
        Architecture.
    schedule
        Noise schedule; needed only by the spectral branch (``config.spectral``).
    """

    def __init__(
        self, config: UNetConfig | None = None, schedule: NoiseSchedule | None = None
    ) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig()
        self.spectral: SpectralBranch | None = None
        if cfg.spectral:
            if schedule is None:
                raise InputError("a U-Net with a spectral branch needs the noise schedule")
            self.spectral = SpectralBranch(schedule.alpha_bar)
        e = cfg.embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.theta_mlp = nn.Sequential(nn.Linear(2, e), nn.SiLU(), nn.Linear(e, e))
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        self.stem = _conv(1, chans[0])
        self.down = nn.ModuleList()
        skips = [chans[0]]
        c = chans[0]
        for level, c_out in enumerate(chans):
            for _ in range(cfg.blocks_per_level):
                self.down.append(ResBlock(c, c_out, e, cfg.groups))
                c = c_out
                if level in cfg.attention_levels:
                    self.down.append(Attention(c, cfg.groups))
                skips.append(c)
            if level < len(chans) - 1:
                self.down.append(_conv(c, c, stride=2))
                skips.append(c)
        self.mid = nn.ModuleList(
            [ResBlock(c, c, e, cfg.groups), Attention(c, cfg.groups), ResBlock(c, c, e, cfg.groups)]
        )
        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            for _ in range(cfg.blocks_per_level + 1):
                self.up.append(ResBlock(c + skips.pop(), chans[level], e, cfg.groups))
                c = chans[level]
                if level in cfg.attention_levels:
                    self.up.append(Attention(c, cfg.groups))
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(c, c))
                )
        self.out = nn.Sequential(nn.GroupNorm(min(cfg.groups, c), c), nn.SiLU(), _conv(c, 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def downsampling(self) -> int:
        """Total downsampling factor; map sizes must be multiples of it."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        out, wiener = self.parts(x_t, t, theta)
        return out if wiener is None else out + wiener

    def parts(
        self, x_t: torch.Tensor, t: torch.Tensor, theta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The two summands of the prediction: the convolutional network's output and the
        spectral branch's Wiener filter (None without the branch)."""
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise InputError(f"x_t must have shape (B, 1, N, N); got {tuple(x_t.shape)}")
        if x_t.shape[-1] % self.downsampling or x_t.shape[-1] != x_t.shape[-2]:
            raise InputError(
                f"maps must be square with a side divisible by {self.downsampling}; "
                f"got {tuple(x_t.shape[-2:])}"
            )
        theta_unit = self.config.prior.to_unit(theta.to(x_t.dtype)).expand(x_t.shape[0], 2)
        emb = self.time_mlp(timestep_embedding(t, self.config.embed_dim).to(x_t.dtype))
        emb = emb + self.theta_mlp(theta_unit)
        h = self.stem(x_t)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock | Attention) else layer(h)
            if not isinstance(layer, Attention):
                hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            elif isinstance(layer, Attention):
                h = layer(h, emb)
            else:
                h = layer(h)
        out = self.out(h)
        return out, None if self.spectral is None else self.spectral(x_t, t, theta_unit)
