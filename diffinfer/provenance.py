"""What made a result: the package, the model and its weights, the likelihood's settings and
seed, and the machine. Every posterior records it (``Samples.info["provenance"]``), and the
CLI and calibration studies write it into their JSON output."""

from __future__ import annotations

import functools
import platform

import numpy as np
import torch


@functools.cache
def _cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()``
    elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str = "cpu") -> dict[str, str | int | None]:
    """The software and machine: versions of diffinfer, Python, numpy and torch, the CPU,
    the torch threads, and the GPU where ``device`` is one."""
    from diffinfer.version import __version__

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"diffinfer": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "cpu": _cpu_name(),
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "gpu": gpu}  # fmt: skip


def model_provenance(model) -> dict | None:
    """A model's name and the sha256 of its weights and card (None for no model; the
    oracle has no weights)."""
    if model is None:
        return None
    card = getattr(model, "card", None) or {}
    return {"name": card.get("name", "unnamed"),
            "weights_sha256": (card.get("weights") or {}).get("sha256"),
            "card_sha256": card.get("card_sha256")}  # fmt: skip
