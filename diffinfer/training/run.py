"""Training a conditional diffusion model on maps in the CAMELS CMD format.

``diffinfer train --config CONFIG.yaml`` runs :func:`train`. The configuration (documented in
docs/training.md, defaults in :data:`DEFAULTS`) names the data set, the architecture, the
schedule and the optimisation; command-line options override it.

Everything random in a step (which maps, their dihedral augmentation, timesteps, noise) is
drawn from a generator seeded by (seed, step), and the learning rate is a function of the
step. A run killed at any point therefore resumes from its last checkpoint (``--resume``)
and continues exactly as if it had never stopped, and a run on W processes (PyTorch DDP,
``torchrun``) sees the same global batches as a run on one: each process takes its slice.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from diffinfer.data.camels import MAPS_PER_COSMOLOGY, CamelsMaps
from diffinfer.diffusion.checkpoint import load_model, save_model
from diffinfer.diffusion.model import DiffusionModel, autocast
from diffinfer.diffusion.oracle import OracleDenoiser
from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.diffusion.unet import UNetConfig
from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.fields.transform import Transform
from diffinfer.io import read_json
from diffinfer.parameters import PriorBox
from diffinfer.simulators.lognormal import LognormalSimulator
from diffinfer.training.config import check_config, check_resumable
from diffinfer.training.state import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    read_training_state,
    write_training_state,
)

LOG_FILE = "log.jsonl"
MODEL_DIR = "model"


# ----------------------------------------------------------------------- the data
class TrainingData:
    """Train and validation maps in model space, held in memory as float32."""

    def __init__(self, config: dict) -> None:
        d = config["data"]
        if d["root"] is None:
            raise InputError("data.root is not set: give the data directory in the config")
        meta_path = Path(d["root"]) / "dataset.json"
        meta = read_json(meta_path, what="dataset description") if meta_path.is_file() else {}
        maps = CamelsMaps.open(
            d["root"],
            field=d["field"],
            suite=d["suite"],
            set_name=d["set"],
            maps_per_cosmology=int(
                d["maps_per_cosmology"] or meta.get("maps_per_cosmology", MAPS_PER_COSMOLOGY)
            ),
        )
        stored = FieldConfig.from_dict(meta["config"]) if "config" in meta else None
        n_pix = int(d["n_pix"] or maps.n_pix)
        box = d["box_size"] or (stored.box_size if stored else None)
        depth = d["depth"] or (stored.depth if stored else None)
        if box is None or depth is None:
            raise InputError(
                "the data set has no dataset.json: set data.box_size and data.depth (Mpc/h)"
            )
        if d["prior"] is not None:
            prior = PriorBox.from_dict(d["prior"])
        elif stored is not None:
            prior = stored.prior
        else:
            theta = maps.params[:, :2]
            prior = PriorBox(tuple(theta.min(0)), tuple(theta.max(0)))
        self.field = FieldConfig(n_pix=n_pix, box_size=box, depth=depth, prior=prior)
        fr = tuple(d["fractions"])
        train_idx = maps.split_maps("train", fr, d["split_seed"])
        val_idx = maps.split_maps("validation", fr, d["split_seed"])
        for split, idx in (("training", train_idx), ("validation", val_idx)):
            if len(idx) == 0:
                raise InputError(
                    f"data.fractions {list(fr)} leave the {split} split empty: the data set "
                    f"has only {maps.n_cosmologies} cosmologies"
                )
        density, theta = maps.load(train_idx, n_pix=n_pix)
        if isinstance(d["transform"], dict):
            self.transform = Transform.from_dict(d["transform"])
        elif d["transform"] == "fit":
            self.transform = Transform.fit(density)
        elif d["transform"] == "prior":
            if meta.get("simulator") != "lognormal":
                raise InputError("data.transform 'prior' needs a log-normal data set")
            self.transform = LognormalSimulator(self.field).prior_transform()
        else:
            raise InputError(
                f"data.transform must be 'fit', 'prior' or {{shift, scale}}, got {d['transform']!r}"
            )
        self.maps = self.transform.forward(density).float().unsqueeze(1)
        self.theta = torch.as_tensor(theta, dtype=torch.float32)
        val_density, val_theta = maps.load(val_idx, n_pix=n_pix)
        self.val_maps = self.transform.forward(val_density).float().unsqueeze(1)
        self.val_theta = torch.as_tensor(val_theta, dtype=torch.float32)
        self.lognormal = meta.get("simulator") == "lognormal" and n_pix == maps.n_pix
        self.description = {
            "root": str(d["root"]),
            "files": f"Maps_{d['field']}_{d['suite']}_{d['set']}",
            "simulator": meta.get("simulator", "unknown"),
            "n_cosmologies": int(maps.n_cosmologies),
            "maps_per_cosmology": int(maps.maps_per_cosmology),
            "split": {"fractions": list(fr), "seed": d["split_seed"], "by": "cosmology"},
            "n_train_maps": len(train_idx),
            "n_validation_maps": len(val_idx),
            "stored_n_pix": int(maps.n_pix),
        }


def _generator(*key: int) -> torch.Generator:
    state = np.random.SeedSequence(list(key)).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def batch_plan(
    n_maps: int, batch_size: int, n_steps: int, seed: int, step: int, augment: bool
) -> dict[str, torch.Tensor]:
    """Map indices, dihedral elements, timesteps and noise of one global batch.

    Map indices walk through a fresh permutation of the training maps every epoch; the
    rest is drawn from a generator seeded by (seed, step).
    """
    pos = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, within = np.divmod(pos, n_maps)
    index = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n_maps)
        index[epochs == e] = perm[within[epochs == e]]
    g = _generator(seed, step, 1)
    dihedral = torch.randint(0, 8 if augment else 1, (batch_size,), generator=g)
    t = torch.randint(1, n_steps + 1, (batch_size,), generator=g)
    return {"index": torch.as_tensor(index), "dihedral": dihedral, "t": t, "generator": g}


def apply_dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dihedral element k[i] (0..7: k % 4 quarter turns, then a mirror if k >= 4) per map."""
    out = x.clone()
    for i in range(x.shape[0]):
        ki = int(k[i])
        y = torch.rot90(x[i], ki % 4, dims=(-2, -1))
        out[i] = y.flip(-1) if ki >= 4 else y
    return out


def learning_rate(config: dict, step: int) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr at the last step."""
    tr = config["train"]
    if step < tr["warmup"]:
        return tr["lr"] * (step + 1) / tr["warmup"]
    span = max(tr["steps"] - tr["warmup"], 1)
    frac = min((step - tr["warmup"]) / span, 1.0)
    return tr["min_lr"] + 0.5 * (tr["lr"] - tr["min_lr"]) * (1 + math.cos(math.pi * frac))


# ------------------------------------------------------------------ validation
class Validator:
    """Held-out epsilon-MSE per timestep band, on fixed maps, timesteps and noise.

    For log-normal data the oracle's MSE on the same draws is reported beside it: the
    excess over the oracle is what training can still gain.
    """

    def __init__(self, data: TrainingData, model: DiffusionModel, config: dict) -> None:
        v = config["validation"]
        n = min(int(v["n_maps"]), len(data.val_maps))
        g = _generator(v["seed"], 0)
        pick = torch.randperm(len(data.val_maps), generator=g)[:n]
        self.y = data.val_maps[pick]
        self.theta = data.val_theta[pick]
        self.edges = [int(e) for e in v["bands"]]
        T = model.schedule.n_steps
        increasing = all(a < b for a, b in zip(self.edges, self.edges[1:], strict=False))
        if len(self.edges) < 2 or self.edges[0] < 1 or self.edges[-1] > T or not increasing:
            raise InputError(
                f"validation.bands must be at least two strictly increasing timesteps within "
                f"1 ... {T}: {self.edges}"
            )
        self.draws = []
        for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True):
            hi = hi + 1 if hi == self.edges[-1] else hi
            t = torch.randint(lo, hi, (n,), generator=g)
            self.draws.append((f"{lo}-{hi - 1}", t, torch.randn(self.y.shape, generator=g)))
        self.oracle = None
        if data.lognormal:
            sim = LognormalSimulator(data.field, data.transform)
            self.oracle = OracleDenoiser(sim, model.schedule)

    @torch.no_grad()
    def __call__(self, model: DiffusionModel, batch: int = 64) -> dict:
        out: dict = {"loss": {}, "oracle": {}, "excess": {}, "excess_se": {}}
        device = model.device
        for name, t, noise in self.draws:
            losses, oracle = [], []
            for i in range(0, len(self.y), batch):
                sl = slice(i, i + batch)
                y, th = self.y[sl].to(device), self.theta[sl].to(device)
                losses.append(model.loss(y, th, t[sl].to(device), noise[sl].to(device)).cpu())
                if self.oracle is not None:
                    x_t = model.schedule.q_sample(y.double().cpu(), t[sl], noise[sl].double())
                    eps = self.oracle(x_t, t[sl], th.double().cpu())
                    oracle.append((eps - noise[sl].double()).pow(2).mean(dim=(1, 2, 3)))
            out["loss"][name] = float(torch.cat(losses).mean())
            if oracle:
                out["oracle"][name] = float(torch.cat(oracle).mean())
                # paired per map: the excess over the oracle and its standard error
                excess = torch.cat(losses).double() - torch.cat(oracle)
                out["excess"][name] = float(excess.mean())
                out["excess_se"][name] = float(excess.std() / math.sqrt(len(excess)))
        out["loss_mean"] = float(np.mean(list(out["loss"].values())))
        for key in ("oracle", "excess", "excess_se"):
            if not out[key]:
                del out[key]
        return out


# ------------------------------------------------------------------- the loop
def _ddp_setup(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(config: dict, *, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) a training run described by ``config`` (see :data:`DEFAULTS`).

    Writes into ``config["out"]``: ``state.safetensors`` (the full training state:
    :func:`write_training_state`; a run started before resumes from its ``state.pt``),
    ``model/`` (the EMA weights as a model directory
    with its card) and ``log.jsonl`` (training and validation records), all atomically, at
    every checkpoint and at the end.

    Returns
    -------
    dict
        ``{"step", "stopped_early", "validation", "model_dir"}``.
    """
    config = check_config(config)  # before anything is read or written
    tr = config["train"]
    device = str(tr["device"])
    if tr["threads"]:
        torch.set_num_threads(int(tr["threads"]))
    rank, world = _ddp_setup(device)
    if world > 1 and device.startswith("cuda"):  # one GPU per process
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        torch.cuda.set_device(device)
    if tr["batch_size"] % world:
        raise InputError(f"train.batch_size {tr['batch_size']} must divide by {world} processes")
    out = Path(config["out"])
    state_path = out / STATE_FILE
    legacy_path = out / LEGACY_STATE_FILE
    if not state_path.exists() and legacy_path.exists():
        state_path = legacy_path  # resumed from, then replaced by STATE_FILE
    if state_path.exists() and not resume:
        raise InputError(
            f"{out} already holds a training run; pass --resume to continue it or choose "
            "another --out"
        )

    data = TrainingData(config)
    schedule = NoiseSchedule(config["schedule"]["kind"], int(config["schedule"]["n_steps"]))
    unet = UNetConfig.from_dict({**config["model"], "prior": data.field.prior.to_dict()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tr["seed"])  # the initial weights depend on the seed alone
        model = DiffusionModel.from_config(unet, schedule, data.transform, data.field)
    if config["init_from"]:
        source = load_model(config["init_from"])
        try:
            model.denoiser.load_state_dict(source.denoiser.state_dict())
        except RuntimeError as exc:
            raise InputError(
                f"cannot start from {config['init_from']}: its architecture differs ({exc})"
            ) from exc
    model.to(device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(
        model.denoiser.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"]
    )
    step, elapsed_before = 0, 0.0
    resumed_validation = None
    if resume and state_path.exists():
        try:
            state = read_training_state(state_path)
            saved_config = json.loads(state["config"])
        except Exception as exc:  # truncated, corrupted or not a training state
            raise DataFileError(
                f"cannot resume from {state_path}: it is damaged or not a diffinfer training "
                f"state ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}); "
                f"restore it from a copy, or move it away to start the run again (the last "
                f"saved model is in {out / 'model'})"
            ) from exc
        check_resumable(saved_config, config)
        try:
            model.denoiser.load_state_dict(state["model"])
            ema.denoiser.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            step, elapsed_before = int(state["step"]), float(state["elapsed"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DataFileError(
                f"cannot resume from {state_path}: its tensors do not fit "
                f"this run ({exc}); move it away to start again"
            ) from exc
        resumed_validation = json.loads(state.get("validation", "null"))
    net = model.denoiser
    if world > 1:
        net = DistributedDataParallel(
            model.denoiser, device_ids=[device] if device.startswith("cuda") else None
        )
    validator = Validator(data, model, config) if rank == 0 else None
    log_path = out / LOG_FILE
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_path, step)

    def checkpoint(validation: dict | None) -> None:
        if rank != 0:
            return
        write_training_state(
            out / STATE_FILE,
            {
                "model": model.denoiser.state_dict(),
                "ema": ema.denoiser.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "elapsed": elapsed_before + time.perf_counter() - t_start,
                "config": json.dumps(config),
                "validation": json.dumps(validation),
            },
        )
        legacy_path.unlink(missing_ok=True)  # replaced by the state just written
        save_model(
            ema,
            out / MODEL_DIR,
            name=config["name"] or out.name,
            data=data.description,
            training={
                "steps": step,
                "samples_seen": step * tr["batch_size"],
                "config": config,
                "wall_hours": (elapsed_before + time.perf_counter() - t_start) / 3600,
                "processes": world,
            },
            metrics={"validation": validation} if validation else {},
        )

    def log(record: dict) -> None:
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    bs_local = tr["batch_size"] // world
    ck = config["checkpoint"]
    t_start = time.perf_counter()
    last_ckpt = t_start
    last_validation = resumed_validation
    bar = tqdm(total=tr["steps"], initial=step, disable=not progress or rank != 0, desc="training")
    window_t, window_n = time.perf_counter(), 0
    stopped_early = False
    saved_step = -1
    while step < tr["steps"]:
        plan = batch_plan(
            len(data.maps), tr["batch_size"], schedule.n_steps, tr["seed"], step, tr["augment"]
        )
        noise = torch.randn((tr["batch_size"], *data.maps.shape[1:]), generator=plan["generator"])
        sl = slice(rank * bs_local, (rank + 1) * bs_local)
        y = apply_dihedral(data.maps[plan["index"][sl]], plan["dihedral"][sl]).to(device)
        theta = data.theta[plan["index"][sl]].to(device)
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step)
        model.denoiser.train()
        with autocast(device, tr["precision"]):
            losses = model.loss(y, theta, plan["t"][sl].to(device), noise[sl].to(device), net)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), tr["grad_clip"])
        opt.step()
        with torch.no_grad():
            d = min(tr["ema_decay"], (1 + step) / (10 + step))
            for pe, pm in zip(ema.denoiser.parameters(), model.denoiser.parameters(), strict=True):
                pe.lerp_(pm, 1 - d)
            for be, bm in zip(ema.denoiser.buffers(), model.denoiser.buffers(), strict=True):
                be.copy_(bm)
        step += 1
        window_n += tr["batch_size"]
        if step % 10 == 0 or step == tr["steps"]:
            rate = window_n / max(time.perf_counter() - window_t, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{rate:.0f}")
            log({"step": step, "loss": loss.item(), "grad_norm": float(grad_norm),
                 "lr": learning_rate(config, step - 1), "samples_per_s": rate})  # fmt: skip
            window_t, window_n = time.perf_counter(), 0
        bar.update(1)
        if step % config["validation"]["every"] == 0 or step == tr["steps"]:
            if validator is not None:
                last_validation = {"step": step, **validator(ema)}
                log({"validation": last_validation})
                bar.write(f"step {step}: validation " + _format_validation(last_validation))
        now = time.perf_counter()
        due = (now - last_ckpt) / 60 >= ck["every_minutes"] or (
            ck["every_steps"] and step % ck["every_steps"] == 0
        )
        over_time = bool(tr["max_minutes"]) and (now - t_start) / 60 >= tr["max_minutes"]
        if world > 1 and tr["max_minutes"]:  # every process stops at the same step
            flag = torch.tensor(int(over_time), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over_time = bool(flag.item())
        if due or over_time or step == tr["steps"]:
            checkpoint(last_validation)
            last_ckpt, saved_step = now, step
        if over_time and step < tr["steps"]:
            stopped_early = True
            break
    bar.close()
    if saved_step != step:  # nothing left to do (steps reached before this call)
        checkpoint(last_validation)
    if world > 1:
        dist.barrier()
    return {
        "step": step,
        "stopped_early": stopped_early,
        "validation": last_validation,
        "model_dir": str(out / MODEL_DIR),
    }


def _format_validation(v: dict) -> str:
    parts = []
    for band, value in v["loss"].items():
        o = v.get("oracle", {}).get(band)
        parts.append(f"t {band}: {value:.4f}" + (f" (oracle {o:.4f})" if o is not None else ""))
    return "; ".join(parts)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (by a run killed after its last checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        s = rec.get("step", rec.get("validation", {}).get("step", 0))
        if s <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
