"""Neural posterior estimation (sbi): the simulation-based reference for any simulator.

A conditional normalising flow q(theta | x) trained with the ``sbi`` package (``pip install
'diffinfer[npe]'``) on labelled maps, with one of the summaries x of a map that
:mod:`diffinfer.likelihoods.npe_summaries` defines: the binned power spectrum alone
(``"power"``), with a CNN embedding of the map (``"power+cnn"``), or with the diffusion
likelihood's compression of the map (``"power+diffusion"``).

A reference is saved as ``weights.safetensors`` (the flow and embedding) and ``card.json``
(the summary, the architecture, the standardisation constants, the geometry, the training
data and settings, and the weights' sha256) — no pickles — and loaded by name or directory
with :meth:`NPEReference.load`. Under the box prior it was trained with, log q(theta | x)
is a log posterior density; :func:`diffinfer.posterior` uses it as the log-likelihood
(``likelihood="npe"``), which is exact for any prior inside the box up to a constant.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.io import read_json, same_json, write_json_atomic
from diffinfer.likelihoods.built import BuiltLikelihood
from diffinfer.likelihoods.npe_summaries import build_estimator, summarise
from diffinfer.parameters import PriorBox, as_theta

CARD_FORMAT = "diffinfer-npe-1"
ENSEMBLE_FORMAT = "diffinfer-npe-ensemble-1"
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_REFERENCES = {
    "npe": "nbody64-npe-ensemble",
    "npe-power": "nbody64-npe-power-ensemble",
    "npe-diffusion": "nbody64-npe-diffusion-ensemble",
}
"""The shipped reference each NPE likelihood name loads by default: the ensembles, which pass
their coverage checks on 1,000 N-body boxes simulated apart (docs/nbody.md, "On boxes
simulated apart"); the single flows ``nbody64-npe`` and ``nbody64-npe-power``, which fail
them, load by name; and the flow on the power spectrum and ``nbody64``'s compression of the
map (docs/nbody.md, "The diffusion model as a compressor")."""
LIKELIHOOD_SUMMARIES = {"npe": "power+cnn", "npe-power": "power",
                        "npe-diffusion": "power+diffusion"}  # fmt: skip
"""The summary of each NPE likelihood name's references."""


@dataclass
class NPEReference:
    """A trained neural posterior estimator and what it needs to summarise a map.

    Build one with :func:`~diffinfer.likelihoods.npe_training.train_npe`, or load one with
    :meth:`load`.
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
        """The summary it was trained on (one of
        :data:`~diffinfer.likelihoods.npe_summaries.SUMMARIES`)."""
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
            lp = _flow_log_prob(self.estimator, t.to(torch.float32), cond)
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
        """Load a reference directory, or a shipped one by name (e.g. ``"nbody64-npe"``);
        an ensemble's directory gives an :class:`NPEEnsemble`.

        Raises
        ------
        DataFileError
            Missing directory, card or weights; a card of another kind; weights whose
            sha256 differs from the card's or that do not fit the architecture; an
            ensemble whose members disagree in their settings.
        """
        from diffinfer.diffusion.checkpoint import resolve_model_dir

        path = resolve_model_dir(name_or_path)
        card = read_json(path / CARD_FILE, what="NPE reference card")
        if card.get("format") == ENSEMBLE_FORMAT:
            return NPEEnsemble.load(path)
        return NPEReference._load_one(path)

    @staticmethod
    def _load_one(path: Path) -> NPEReference:
        """One flow's directory (card and weights checked)."""
        from safetensors.torch import load_file

        from diffinfer.diffusion.checkpoint import sha256_of

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
        return NPEReference(card=card, estimator=estimator)


SHARED_SETTINGS = ("summary", "field", "edges", "power_mean", "power_std", "transform",
                   "compressor", "compressed_mean", "compressed_std", "architecture",
                   "data")  # fmt: skip
"""Card entries every member of an ensemble must share (the summary and its constants, the
flow, the training data)."""
SHARED_TRAINING = ("n_maps", "batch_size", "learning_rate", "max_epochs", "stop_after_epochs",
                   "validation", "augment", "trainer")  # fmt: skip
"""Training settings every member must share; the seed must differ."""


@dataclass
class NPEEnsemble(NPEReference):
    """An equally weighted mixture of independently trained flows on one summary.

    q(theta | x) = (1 / K) sum_k q_k(theta | x): the members share the summary, the
    architecture and the training data and settings, and differ in their seed
    (initialisation, validation split, batches). The mixture is wider where the members
    disagree, which is where a single flow is overconfident. Stored as a directory with
    ``card.json`` (format ``diffinfer-npe-ensemble-1``, the shared settings, each member's
    weights' sha256, the measured coverage) and one NPE reference directory per member.
    """

    members: list[NPEReference] = None  # type: ignore[assignment]

    @classmethod
    def from_members(cls, members: list[NPEReference], name: str) -> NPEEnsemble:
        """An ensemble of trained references; refused unless they agree in every setting of
        :data:`SHARED_SETTINGS` and :data:`SHARED_TRAINING` and differ in their seeds."""
        members = list(members)
        if len(members) < 2:
            raise InputError(f"an ensemble needs at least 2 members, got {len(members)}")
        _check_members([m.card for m in members], [f"member {i}" for i in range(len(members))])
        shared = {k: members[0].card[k] for k in SHARED_SETTINGS if k in members[0].card}
        card = {"format": ENSEMBLE_FORMAT, "kind": "npe-ensemble", "name": name, **shared}
        return cls(card=card, estimator=None, members=members)  # type: ignore[arg-type]

    @property
    def n_members(self) -> int:
        """Number of flows K."""
        return len(self.members)

    def log_prob(self, theta: np.ndarray | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log of the mixture density (1 / K) sum_k q_k(theta | x), shape (B,); -inf outside
        the prior box."""
        lp = torch.stack([m.log_prob(theta, x) for m in self.members])
        return torch.logsumexp(lp, dim=0) - math.log(len(self.members))

    def sample(self, n: int, x: torch.Tensor, seed: int = 0) -> np.ndarray:
        """``n`` draws of the mixture: a multinomial share per member, shape (n, 2)."""
        rng = np.random.default_rng(seed)
        k = len(self.members)
        counts = rng.multinomial(int(n), np.full(k, 1.0 / k))
        draws = [m.sample(c, x, seed=seed * k + i) for i, (m, c) in
                 enumerate(zip(self.members, counts, strict=True)) if c > 0]  # fmt: skip
        return np.concatenate(draws)[rng.permutation(int(n))]

    def save(self, path: str | os.PathLike) -> Path:
        """Write each member into ``path/member-K`` and the ensemble's ``card.json``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        shas = []
        for i, member in enumerate(self.members):
            member.card["name"] = f"{out.name}/member-{i}"
            member.save(out / f"member-{i}")
            shas.append(member.card["weights"]["sha256"])
        card = dict(self.card)
        card["name"] = out.name
        card["members"] = [f"member-{i}" for i in range(len(self.members))]
        card["weights"] = {"members": shas, "sha256": _digest(shas)}
        write_json_atomic(out / CARD_FILE, card)
        self.card = card
        return out

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> NPEEnsemble:
        """Load an ensemble directory or a shipped one by name.

        Raises
        ------
        DataFileError
            Not an ensemble card; a member missing, damaged or not the one the card lists;
            members that disagree in their settings or share a seed.
        """
        from diffinfer.diffusion.checkpoint import resolve_model_dir

        path = resolve_model_dir(name_or_path)
        card = read_json(path / CARD_FILE, what="NPE ensemble card")
        if card.get("format") != ENSEMBLE_FORMAT:
            raise DataFileError(f"{path / CARD_FILE} is not an NPE ensemble card (format "
                                f"{card.get('format')!r}, expected "
                                f"{ENSEMBLE_FORMAT!r})")  # fmt: skip
        names = card.get("members") or []
        shas = (card.get("weights") or {}).get("members") or []
        if len(names) < 2 or len(shas) != len(names):
            raise DataFileError(f"{path / CARD_FILE} lists {len(names)} members and "
                                f"{len(shas)} weight digests: restore the ensemble from "
                                "its source")  # fmt: skip
        members = []
        for member, sha in zip(names, shas, strict=True):
            if Path(member).name != member:
                raise DataFileError(f"{path / CARD_FILE}: member {member!r} is not a plain "
                                    "directory name")  # fmt: skip
            ref = NPEReference._load_one(path / member)
            if ref.card["weights"]["sha256"] != sha:
                raise DataFileError(f"{path / member} is not the member that "
                                    f"{path / CARD_FILE} lists (weights sha256 differs): "
                                    "restore the ensemble from its source")  # fmt: skip
            members.append(ref)
        try:
            _check_members([m.card for m in members], names)
        except InputError as exc:
            raise DataFileError(f"{path}: {exc}") from exc
        for key in SHARED_SETTINGS:
            if key in card and not same_json(card[key], members[0].card.get(key)):
                raise DataFileError(f"{path / CARD_FILE}: {key!r} differs from its members'")
        card["name"] = path.name
        return cls(card=card, estimator=None, members=members)  # type: ignore[arg-type]


def _flow_log_prob(estimator: nn.Module, theta: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """log q(theta | x) of an sbi estimator for B parameter vectors (B, 2) and one summary
    (1, D), with the summary embedded once.

    sbi's ``log_prob`` repeats the condition for every θ and runs the embedding (the CNN)
    B times; for an nflows flow the same density is its transform and base distribution
    applied to the embedding computed once (``nflows.flows.base.Flow._log_prob``). Other
    estimators take sbi's path.
    """
    net = getattr(estimator, "net", None)
    parts = ("_embedding_net", "_transform", "_distribution")
    if net is None or not all(hasattr(net, a) for a in parts):
        return estimator.log_prob(theta.unsqueeze(1), condition=cond).reshape(-1)
    context = net._embedding_net(cond).expand(len(theta), -1)
    noise, logabsdet = net._transform(theta, context=context)
    return net._distribution.log_prob(noise, context=context) + logabsdet


def _digest(shas: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(shas).encode()).hexdigest()


def _check_members(cards: list[dict], names: list[str]) -> None:
    """Refuse members that disagree in a shared setting (naming it) or share a seed."""
    first = cards[0]
    for name, card in zip(names[1:], cards[1:], strict=True):
        differ = [k for k in SHARED_SETTINGS
                  if not same_json(card.get(k), first.get(k))]  # fmt: skip
        train, train0 = card.get("training") or {}, first.get("training") or {}
        differ += [f"training.{k}" for k in SHARED_TRAINING
                   if not same_json(train.get(k), train0.get(k))]  # fmt: skip
        if differ:
            raise InputError(f"{name} differs from {names[0]} in {', '.join(differ)}: the "
                             "members of an ensemble must share the summary, the flow and "
                             "the training data and settings")  # fmt: skip
    seeds = [(c.get("training") or {}).get("seed") for c in cards]
    if len(set(map(str, seeds))) != len(seeds):
        raise InputError(f"the members' seeds {seeds} repeat: an ensemble needs independently "
                         "trained members (another seed each)")  # fmt: skip


def record_coverage(name_or_path: str | os.PathLike, coverage: dict) -> Path:
    """Write a coverage study's summary into a reference's card (entry ``"coverage"``),
    atomically; the weights and their digests are untouched. Returns the card's path.

    Raises
    ------
    DataFileError
        The directory holds no NPE reference or ensemble card.
    """
    from diffinfer.diffusion.checkpoint import resolve_model_dir

    path = resolve_model_dir(name_or_path) / CARD_FILE
    card = read_json(path, what="NPE reference card")
    if card.get("format") not in (CARD_FORMAT, ENSEMBLE_FORMAT):
        raise DataFileError(f"{path} is not an NPE reference card (format "
                            f"{card.get('format')!r})")  # fmt: skip
    card["coverage"] = coverage
    write_json_atomic(path, card)
    return path


_NPE_CACHE: dict[str, NPEReference] = {}


def calibrated_route(model_name: str) -> str | None:
    """A sentence naming the calibrated analysis that compresses maps with ``model_name``:
    the default ``"npe-diffusion"`` reference, where its compressor is that model and its
    card records a ``calibrated`` coverage study; None otherwise (or where it is not
    shipped). Only the reference's card is read."""
    from diffinfer.diffusion.checkpoint import resolve_model_dir

    try:
        card = read_json(resolve_model_dir(DEFAULT_REFERENCES["npe-diffusion"]) / CARD_FILE,
                         what="NPE ensemble card")  # fmt: skip
    except DataFileError:
        return None
    coverage = card.get("coverage") or {}
    if (card.get("compressor") or {}).get("model") != model_name or (
        coverage.get("verdict") != "calibrated"
    ):
        return None
    return (f"likelihood='npe-diffusion' (NPE on {model_name}'s compression of the map, "
            f"{card.get('name')}) is calibrated by its study ({coverage.get('study')}, "
            f"{coverage.get('n_maps')} maps simulated apart)")  # fmt: skip


def npe_reference(likelihood: str, npe: object = None) -> NPEReference:
    """The NPE reference of ``likelihood="npe"``, ``"npe-power"`` or ``"npe-diffusion"``:
    given, or loaded once per process by name or directory (default
    :data:`DEFAULT_REFERENCES`); a reference on another summary than the name's
    (:data:`LIKELIHOOD_SUMMARIES`) is refused."""
    if npe is None:
        npe = DEFAULT_REFERENCES[likelihood]
    if not isinstance(npe, NPEReference):
        key = os.fspath(npe)
        if key not in _NPE_CACHE:
            _NPE_CACHE[key] = NPEReference.load(key)
        npe = _NPE_CACHE[key]
    wanted = LIKELIHOOD_SUMMARIES[likelihood]
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
