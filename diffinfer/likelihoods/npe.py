"""Neural posterior estimation (sbi): the simulation-based reference for any simulator.

A conditional normalising flow q(theta | x) trained with the ``sbi`` package (``pip install
'diffinfer[npe]'``) on labelled maps, with one of two summaries x of a map:

- ``"power+cnn"``: the standardised binned log power spectrum of the overdensity
  (:func:`~diffinfer.likelihoods.spectrum.spectrum_bins`) and a small periodic CNN embedding
  of the map in model space (log density, standardised with constants fitted to the
  training maps), trained jointly with the flow;
- ``"power"``: the binned log power spectrum alone.

A reference is saved as ``weights.safetensors`` (the flow and embedding) and ``card.json``
(the summary, the architecture, the standardisation constants, the geometry, the training
data and settings, and the weights' sha256) — no pickles — and loaded by name or directory
with :meth:`NPEReference.load`. Under the box prior it was trained with, log q(theta | x)
is a log posterior density; :func:`diffinfer.posterior` uses it as the log-likelihood
(``likelihood="npe"``), which is exact for any prior inside the box up to a constant.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig, as_maps
from diffinfer.fields.stats import power_spectrum
from diffinfer.fields.transform import Transform
from diffinfer.io import read_json, write_json_atomic
from diffinfer.likelihoods.built import BuiltLikelihood
from diffinfer.parameters import PriorBox, as_theta

SUMMARIES = ("power+cnn", "power")
"""The summaries an NPE reference can be trained on."""

CARD_FORMAT = "diffinfer-npe-1"
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_REFERENCES = {"npe": "nbody64-npe", "npe-power": "nbody64-npe-power"}
"""The shipped reference each NPE likelihood name loads by default."""


def _import_sbi():
    try:
        from sbi.inference import NPE
        from sbi.neural_nets import posterior_nn
        from sbi.utils import BoxUniform
    except ImportError as exc:
        raise ImportError(
            "NPE references need the sbi package: pip install 'diffinfer[npe]'"
        ) from exc
    return NPE, posterior_nn, BoxUniform


class MapEmbedding(nn.Module):
    """Embedding of a summary vector [log P (n_bins), map (n_pix^2)] into features.

    The power-spectrum part passes through; the map part goes through a periodic CNN
    (circular padding, 2x2 average pooling after each stage, global mean), so its features
    do not change when the map is shifted periodically by a multiple of 2^len(channels)
    pixels (8 by default); other shifts change them slightly. (The ``"power"`` summary
    needs no embedding.)

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
            layers += [nn.Conv2d(c_in, c, 3, padding=1, padding_mode="circular"), nn.GELU(),
                       nn.Conv2d(c, c, 3, padding=1, padding_mode="circular"), nn.GELU(),
                       nn.AvgPool2d(2)]  # fmt: skip
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c_in, 64), nn.GELU(), nn.Linear(64, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        power = x[:, : self.n_bins]
        maps = x[:, self.n_bins :].reshape(-1, 1, self.n_pix, self.n_pix)
        features = self.head(self.conv(maps).mean(dim=(-2, -1)))
        return torch.cat([power, features], dim=-1)


@dataclass
class NPEReference:
    """A trained neural posterior estimator and what it needs to summarise a map.

    Build one with :func:`train_npe`, or load one with :meth:`load`.
    """

    card: dict
    estimator: nn.Module

    # ----------------------------------------------------------------- summaries
    @property
    def field(self) -> FieldConfig:
        """Geometry (and prior box) of the maps it was trained on."""
        return FieldConfig.from_dict(self.card["field"])

    @property
    def prior(self) -> PriorBox:
        """The box prior it was trained with."""
        return self.field.prior

    @property
    def summary(self) -> str:
        """``"power+cnn"`` or ``"power"``."""
        return self.card["summary"]

    @property
    def name(self) -> str:
        """The reference's name (its directory's name when loaded)."""
        return self.card.get("name", "npe")

    def summarise(self, density: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Summary vectors of density maps (N, N) or (M, N, N), shape (M, dim), float32."""
        return summarise(density, self.card)

    # ----------------------------------------------------------------- inference
    def _posterior(self):
        from sbi.inference.posteriors import DirectPosterior
        from sbi.utils import BoxUniform

        box = self.prior
        prior = BoxUniform(torch.tensor(box.low, dtype=torch.float32),
                           torch.tensor(box.high, dtype=torch.float32))  # fmt: skip
        return DirectPosterior(self.estimator, prior)

    def log_prob(self, theta: np.ndarray | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(theta | x) for a batch of parameters (B, 2) and one summary, shape (B,);
        -inf outside the prior box (float64; not renormalised for leakage)."""
        t = as_theta(theta)
        inside = torch.as_tensor(self.prior.contains(t.detach()))
        with torch.no_grad():
            cond = x.reshape(1, -1).to(torch.float32)
            lp = self.estimator.log_prob(t.to(torch.float32).unsqueeze(1), condition=cond)
        lp = lp.reshape(-1).to(torch.float64)
        return torch.where(inside, lp, torch.full_like(lp, -torch.inf))

    def sample(self, n: int, x: torch.Tensor, seed: int = 0) -> np.ndarray:
        """``n`` posterior draws (rejecting leakage outside the box), shape (n, 2)."""
        torch.manual_seed(seed)
        post = self._posterior()
        with torch.no_grad():
            draws = post.sample((int(n),), x=x.reshape(1, -1), show_progress_bars=False)
        return draws.numpy().astype(np.float64)

    # ----------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``weights.safetensors`` and ``card.json`` into ``path`` (atomically)."""
        from safetensors.torch import save_file

        from diffinfer.diffusion.checkpoint import sha256_of

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        weights = out / WEIGHTS_FILE
        tmp = weights.with_name(f".{WEIGHTS_FILE}.{os.getpid()}.partial")
        state = {k: v.detach().contiguous().cpu() for k, v in self.estimator.state_dict().items()}
        save_file(state, tmp)
        os.replace(tmp, weights)
        card = dict(self.card)
        card["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_of(weights)}
        write_json_atomic(out / CARD_FILE, card)
        self.card = card
        return out

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> NPEReference:
        """Load a reference directory, or a shipped one by name (e.g. ``"nbody64-npe"``).

        Raises
        ------
        DataFileError
            Missing directory, card or weights; a card of another kind; weights whose
            sha256 differs from the card's or that do not fit the architecture.
        """
        from safetensors.torch import load_file

        from diffinfer.diffusion.checkpoint import resolve_model_dir, sha256_of

        path = resolve_model_dir(name_or_path)
        card = read_json(path / CARD_FILE, what="NPE reference card")
        if card.get("format") != CARD_FORMAT:
            raise DataFileError(f"{path / CARD_FILE} is not an NPE reference card (format "
                                f"{card.get('format')!r}, expected {CARD_FORMAT!r})")  # fmt: skip
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise DataFileError(f"weights file missing: {weights}")
        if sha256_of(weights) != card.get("weights", {}).get("sha256"):
            raise DataFileError(f"{weights} does not match the sha256 in {path / CARD_FILE}: "
                                "the file is corrupted or belongs to another card; restore "
                                "it from the reference's source")  # fmt: skip
        card["name"] = path.name
        estimator = build_estimator(card)
        try:
            estimator.load_state_dict(load_file(weights))
        except (RuntimeError, KeyError) as exc:
            raise DataFileError(f"{weights} does not fit the architecture of its card: "
                                f"{exc}") from exc  # fmt: skip
        estimator.eval()
        return cls(card=card, estimator=estimator)


def summarise(density: np.ndarray | torch.Tensor, card: dict) -> torch.Tensor:
    """Summary vectors of density maps as a reference's ``card`` defines them."""
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
    return torch.cat(parts, dim=-1)


def build_estimator(card: dict) -> nn.Module:
    """The untrained flow and embedding that a card describes."""
    _, posterior_nn, _ = _import_sbi()
    arch = card["architecture"]
    field = FieldConfig.from_dict(card["field"])
    n_bins = len(card["edges"]) - 1
    if card["summary"] == "power+cnn":
        embed: nn.Module = MapEmbedding(n_bins, field.n_pix,
                                        channels=tuple(arch["channels"]),
                                        n_features=int(arch["n_features"]))  # fmt: skip
    else:  # the summary is the power spectrum itself
        embed = nn.Identity()
    build = posterior_nn(model=arch["flow"], hidden_features=int(arch["hidden_features"]),
                         num_transforms=int(arch["num_transforms"]), embedding_net=embed,
                         z_score_x="none", z_score_theta="independent")  # fmt: skip
    box = field.prior
    theta = torch.as_tensor(np.random.default_rng(0).uniform(box.low, box.high, (64, 2)),
                            dtype=torch.float32)  # fmt: skip
    dim = n_bins + (field.n_pix**2 if card["summary"] == "power+cnn" else 0)
    return build(theta, torch.zeros(64, dim))


def train_npe(
    density: np.ndarray,
    theta: np.ndarray,
    field: FieldConfig,
    *,
    summary: str = "power+cnn",
    flow: str = "nsf",
    hidden_features: int = 64,
    num_transforms: int = 5,
    channels: tuple[int, ...] = (8, 16, 32),
    n_features: int = 16,
    n_bins: int = 12,
    batch_size: int = 256,
    learning_rate: float = 5e-4,
    max_epochs: int = 200,
    stop_after_epochs: int = 20,
    seed: int = 0,
    data: dict | None = None,
) -> NPEReference:
    """Train an NPE reference on labelled maps.

    Parameters
    ----------
    density, theta
        Training maps (M, N, N) (density rho / mean, positive) and their parameters (M, 2).
    field
        Geometry and prior box of the maps.
    summary
        ``"power+cnn"`` or ``"power"``.
    flow, hidden_features, num_transforms
        The sbi flow (``"nsf"``, ``"maf"``, ...) and its size.
    channels, n_features
        The CNN embedding's stages and output features (``"power+cnn"`` only).
    n_bins
        Requested power-spectrum bins (:func:`~diffinfer.likelihoods.spectrum.spectrum_bins`).
    batch_size, learning_rate, max_epochs, stop_after_epochs
        sbi's training settings (early stopping on a 10 % validation split).
    seed
        Seeds the network initialisation, the validation split and the batches.
    data
        Description of the training data, recorded in the card.

    Returns
    -------
    NPEReference
        The trained reference (save it with :meth:`NPEReference.save`).
    """
    from diffinfer.likelihoods.spectrum import spectrum_bins
    from diffinfer.validation import check_choice, check_int

    check_choice("summary", summary, SUMMARIES)
    check_int("max_epochs", max_epochs, low=1)
    rho = as_maps(density, n_pix=field.n_pix, positive=True, what="training map")
    theta_t = as_theta(theta, prior=field.prior)
    if len(theta_t) != len(rho):
        raise InputError(f"{len(rho)} maps but {len(theta_t)} parameter vectors")
    edges = spectrum_bins(field.n_pix, field.box_size, n_bins)
    delta = rho / rho.mean(dim=(-2, -1), keepdim=True) - 1.0
    logp = np.log(power_spectrum(delta, field.box_size, edges=edges).power)
    card = {
        "format": CARD_FORMAT,
        "kind": "npe",
        "summary": summary,
        "field": field.to_dict(),
        "edges": edges.tolist(),
        "power_mean": logp.mean(0).tolist(),
        "power_std": logp.std(0).tolist(),
        "transform": Transform.fit(rho.numpy()).to_dict(),
        "architecture": {
            "flow": flow,
            "hidden_features": hidden_features,
            "num_transforms": num_transforms,
            "channels": list(channels),
            "n_features": n_features,
        },
        "data": data or {},
    }
    NPE, _, BoxUniform = _import_sbi()
    torch.manual_seed(seed)
    x = summarise(rho, card)
    estimator = build_estimator(card)
    box = field.prior
    prior = BoxUniform(torch.tensor(box.low, dtype=torch.float32),
                       torch.tensor(box.high, dtype=torch.float32))  # fmt: skip
    try:  # sbi >= 0.26 takes a tracker; the default writes TensorBoard logs into the cwd
        inference = NPE(prior=prior, density_estimator=lambda t, xx: estimator,
                        show_progress_bars=False, tracker=_NoTracker())  # fmt: skip
    except TypeError:
        inference = NPE(prior=prior, density_estimator=lambda t, xx: estimator,
                        show_progress_bars=False)  # fmt: skip
    inference.append_simulations(theta_t.to(torch.float32), x)
    start = time.perf_counter()
    trained = inference.train(
        training_batch_size=batch_size, learning_rate=learning_rate,
        max_num_epochs=max_epochs, stop_after_epochs=stop_after_epochs,
    )  # fmt: skip
    summary_ = inference.summary
    card["training"] = {
        "n_maps": len(rho),
        "seed": seed,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_epochs": max_epochs,
        "stop_after_epochs": stop_after_epochs,
        "epochs": len(summary_["training_loss"]),
        "best_validation_loss": float(min(summary_["validation_loss"])),
        "seconds": round(time.perf_counter() - start, 1),
        "sbi_version": _version("sbi"),
        "torch_version": torch.__version__,
    }
    trained.eval()
    return NPEReference(card=card, estimator=trained)


class _NoTracker:
    """An sbi tracker that records nothing (sbi's default writes ./sbi-logs)."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def add_figure(self, name: str, figure: object, step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


def _version(package: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


_NPE_CACHE: dict[str, NPEReference] = {}


def npe_reference(likelihood: str, npe: object = None) -> NPEReference:
    """The NPE reference of ``likelihood="npe"`` / ``"npe-power"``: given, or loaded once per
    process by name or directory (default :data:`DEFAULT_REFERENCES`); a reference on the
    other summary is refused."""
    if npe is None:
        npe = DEFAULT_REFERENCES[likelihood]
    if not isinstance(npe, NPEReference):
        key = os.fspath(npe)
        if key not in _NPE_CACHE:
            _NPE_CACHE[key] = NPEReference.load(key)
        npe = _NPE_CACHE[key]
    wanted = "power" if likelihood == "npe-power" else "power+cnn"
    if npe.summary != wanted:
        raise InputError(f"likelihood={likelihood!r} needs an NPE reference on {wanted!r}; "
                         f"{npe.name} is trained on {npe.summary!r}")  # fmt: skip
    return npe


def npe_likelihood(npe: NPEReference, field: np.ndarray | torch.Tensor,
                   likelihood: str) -> BuiltLikelihood:  # fmt: skip
    """The reference's posterior density q(theta | map), used as the log-likelihood of one
    map (N, N) under its own prior box; a stack of maps is refused."""
    if field.ndim == 3:
        raise InputError(
            f"likelihood={likelihood!r} is a posterior estimate q(theta | one map): a product "
            f"over {len(field)} maps would count the prior {len(field)} times and is not what "
            "it was trained for; give one map, or use the diffusion, 'exact' or 'power' "
            "likelihood for several maps of one cosmology"
        )
    summary = npe.summarise(field)

    def log_like(theta: torch.Tensor) -> torch.Tensor:
        return npe.log_prob(theta, summary)

    settings = {"npe": npe.name, "summary": npe.summary,
                "weights_sha256": (npe.card.get("weights") or {}).get("sha256")}  # fmt: skip
    description = f"neural posterior estimate ({npe.name}: {npe.summary})"
    return BuiltLikelihood(log_like, npe.prior, None, description, settings)
