"""The periodic convolution's gradient: ``PeriodicConv2d`` against ``nn.Conv2d`` with
``padding_mode="circular"``, side by side in one process.

    .venv/bin/python benchmarks/bench_periodic_conv.py [--threads 1]

Both compute the same function with the same parameters; ``PeriodicConv2d`` folds the
padding's gradient back onto the map edges itself instead of autograd's path through
slices. Timed (best of 5, alternating the two): a training step (forward and backward) of the NPE
reference's CNN embedding (256 maps of 64^2) and of the shipped ``lognormal64`` U-Net (32
maps), and the U-Net's forward pass without gradients (the likelihood's denoiser calls,
which should not change). Prints each time, the ratio new / old, and the largest difference
of the outputs and gradients.
"""

from __future__ import annotations

import argparse

import torch
from _timing import best_of, machine
from torch import nn

from diffinfer.diffusion import load_model
from diffinfer.diffusion.unet import PeriodicConv2d
from diffinfer.likelihoods.npe import MapEmbedding


def with_circular_conv2d(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose PeriodicConv2d layers are nn.Conv2d(padding_mode="circular")
    with the same parameters."""
    import copy

    old = copy.deepcopy(net)
    for mod in list(old.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, PeriodicConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, 3, stride=child.stride,
                                 padding=1, padding_mode="circular")  # fmt: skip
                conv.load_state_dict(child.state_dict())
                setattr(mod, child_name, conv)
    return old


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    g = torch.Generator().manual_seed(0)
    embed = MapEmbedding(12, 64)
    x_embed = torch.randn(256, 12 + 64 * 64, generator=g)
    model = load_model("lognormal64")
    unet = model.denoiser
    n = 32
    x = torch.randn(n, 1, 64, 64, generator=g)
    t = torch.randint(1, 1000, (n,), generator=g)
    theta = torch.tensor([0.3, 0.8]).repeat(n, 1)
    cases = {
        "NPE CNN embedding, training step (256 maps)": (embed, lambda m: m(x_embed), True),
        "U-Net, training step (32 maps)": (unet, lambda m: m(x, t, theta), True),
        "U-Net, forward without gradient (32 maps)": (unet, lambda m: m(x, t, theta), False),
    }
    for label, (new, call, grad) in cases.items():
        old = with_circular_conv2d(new)
        times: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(5):  # alternated, so that a load from elsewhere hits both alike
            for i, net in enumerate((old, new)):
                times[i].append(best_of(lambda n=net, c=call, g=grad: step(n, c, g), 1))
        t_old, t_new = min(times[0]), min(times[1])
        (y_old, g_old), (y_new, g_new) = step(old, call, grad), step(new, call, grad)
        diff = max(float((a - b).abs().max())
                   for a, b in zip([y_old, *g_old], [y_new, *g_new], strict=True))  # fmt: skip
        print(f"{label}: {t_old * 1e3:.0f} ms -> {t_new * 1e3:.0f} ms (x{t_new / t_old:.2f}); "
              f"largest difference of output and gradients {diff:.1e}")  # fmt: skip


def step(net: nn.Module, call, grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass (and backward, with ``grad``): the output and the gradients."""
    if not grad:
        with torch.no_grad():
            return call(net), []
    net.zero_grad()
    out = call(net)
    out.pow(2).mean().backward()
    return out.detach(), [q.grad.clone() for q in net.parameters()]


if __name__ == "__main__":
    main()
