"""Particle-mesh N-body maps: non-Gaussian projected matter density, through JaxPM.

One box per cosmology: Gaussian initial conditions with the project's linear spectrum
(:func:`~diffinfer.cosmology.linear_power`, Eisenstein & Hu with the CAMELS parameters,
normalised to sigma_8), displaced by second-order Lagrangian perturbation theory to
``a_initial``, then evolved to a = 1 by a kick-drift-kick leapfrog whose kicks are JaxPM's
particle-mesh forces (CIC painting, FFT Poisson solve, CIC read-out) and whose time factors
are FastPM's (exact linear growth at any step size, :func:`leapfrog_factors`). The particles of the
final box are cut into ``n_slabs`` slabs along each of the three axes and painted (CIC) onto
an ``n_pix``^2 grid: 3 x n_slabs maps per box, the CAMELS CMD arrangement (15 maps of one
simulation). Densities are rho / rho_mean of the box, so a map's mean carries the slab's
large-scale mode.

JaxPM (``pip install diffinfer[nbody]``) is imported only when a box is simulated. Why
JaxPM and these settings: docs/nbody.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from diffinfer.cosmology import HUBBLE, N_S, OMEGA_B, growth, hubble_rate, linear_power
from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox, as_theta

NBODY_SUITE = "Nbody"

# JaxPM paints every particle of a regular Lagrangian grid on a mesh of the same shape, and
# the force resolution is about two mesh cells: these ranges keep a run meaningful here.
_LIMITS = {
    "n_particles": (16, 256),
    "box_size": (10.0, 2000.0),
    "n_steps": (2, 200),
    "a_initial": (0.01, 0.5),
    "n_slabs": (1, 32),
}


@dataclass(frozen=True)
class NBodyConfig:
    """Settings of the particle-mesh runs and of the maps cut from them.

    Parameters
    ----------
    n_particles
        Particles per side (n_particles^3 in the box).
    mesh
        Force mesh cells per side. JaxPM paints a regular particle grid onto a mesh of the
        same shape, so it must equal ``n_particles``.
    box_size
        Side of the cubic box and of each map, Mpc/h.
    n_steps
        Leapfrog steps from ``a_initial`` to 1, uniform in the scale factor.
    a_initial
        Scale factor of the 2LPT initial conditions.
    n_slabs
        Slabs per axis; a box gives 3 x n_slabs maps, each ``box_size / n_slabs`` deep.
    n_pix
        Pixels per map side (even, at most ``n_particles * refine``).
    refine
        Lagrangian refinement of the painted tracers: the displacement field, smooth in
        Lagrangian space, is interpolated (trilinearly, periodic) to ``refine``^3 virtual
        particles per particle, each with 1 / refine^3 of its mass, before the maps are
        painted. With 64^3 particles and 64^2 x 5 pixel columns a map pixel holds 12.8
        particles on average and voids leave pixels empty (density 0, no logarithm);
        refine = 2 gives 102 tracers per pixel at no cost in force resolution.
    prior
        The parameter box the cosmologies are drawn from.
    """

    n_particles: int = 64
    mesh: int = 64
    box_size: float = 128.0
    n_steps: int = 10
    a_initial: float = 0.1
    n_slabs: int = 5
    n_pix: int = 64
    refine: int = 2
    prior: PriorBox = field(default_factory=lambda: DEFAULT_PRIOR)

    def __post_init__(self) -> None:
        from diffinfer.validation import check_float, check_int

        lo, hi = _LIMITS["n_particles"]
        n = check_int("n_particles", self.n_particles, low=lo, high=hi,
                      what="particles per side")  # fmt: skip
        mesh = check_int("mesh", self.mesh, low=1)
        if mesh != n:
            raise InputError(
                f"mesh {mesh} does not fit {n}^3 particles: JaxPM paints a regular grid of "
                f"particles onto a mesh of the same shape, so set mesh = n_particles = {n} "
                "(or n_particles = mesh)"
            )
        lo, hi = _LIMITS["box_size"]
        check_float("box_size", self.box_size, low=lo, high=hi, what="Mpc/h")
        lo, hi = _LIMITS["n_steps"]
        check_int("n_steps", self.n_steps, low=lo, high=hi, what="leapfrog steps to a = 1")
        lo, hi = _LIMITS["a_initial"]
        check_float("a_initial", self.a_initial, low=lo, high=hi,
                    what="scale factor of the initial conditions")  # fmt: skip
        lo, hi = _LIMITS["n_slabs"]
        slabs = check_int("n_slabs", self.n_slabs, low=lo, high=hi, what="slabs per axis")
        n_pix = check_int("n_pix", self.n_pix, low=2)
        refine = check_int("refine", self.refine, low=1, high=4,
                           what="virtual particles per particle and axis")  # fmt: skip
        if n_pix % 2 or n_pix > n * refine:
            raise InputError(
                f"n_pix {n_pix} must be even and at most n_particles x refine = {n * refine} "
                "(a map pixel needs at least one column of tracers)"
            )
        if slabs > n:
            raise InputError(f"n_slabs {slabs} exceeds n_particles {n}: a slab would hold "
                             "less than one particle layer")  # fmt: skip
        if not isinstance(self.prior, PriorBox):
            raise InputError(f"prior must be a PriorBox, got {type(self.prior).__name__}")
        if self.prior.low[0] <= OMEGA_B:
            raise InputError(f"the prior's lower Omega_m edge {self.prior.low[0]} must exceed "
                             f"Omega_b = {OMEGA_B} (cold dark matter needs a positive "
                             "density)")  # fmt: skip

    @property
    def depth(self) -> float:
        """Depth of one slab, Mpc/h."""
        return self.box_size / self.n_slabs

    @property
    def maps_per_box(self) -> int:
        """Maps cut from one box: three axes times ``n_slabs``."""
        return 3 * self.n_slabs

    @property
    def field(self) -> FieldConfig:
        """The maps' geometry, as the rest of the toolkit describes maps."""
        return FieldConfig(n_pix=self.n_pix, box_size=self.box_size, depth=self.depth,
                           prior=self.prior)  # fmt: skip

    def to_dict(self) -> dict:
        """JSON-ready description (also the ``config`` of the data set's dataset.json:
        it holds the :class:`FieldConfig` keys n_pix, box_size, depth, prior)."""
        return {
            **self.field.to_dict(),
            "n_particles": self.n_particles,
            "mesh": self.mesh,
            "n_steps": self.n_steps,
            "a_initial": self.a_initial,
            "n_slabs": self.n_slabs,
            "refine": self.refine,
            "scheme": "2LPT + FastPM kick-drift-kick (JaxPM forces)",
        }

    @classmethod
    def from_dict(cls, d: dict) -> NBodyConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            n_particles=int(d["n_particles"]), mesh=int(d["mesh"]),
            box_size=float(d["box_size"]), n_steps=int(d["n_steps"]),
            a_initial=float(d["a_initial"]), n_slabs=int(d["n_slabs"]),
            n_pix=int(d["n_pix"]), refine=int(d.get("refine", 1)),
            prior=PriorBox.from_dict(d["prior"]) if "prior" in d else DEFAULT_PRIOR,
        )  # fmt: skip


def _import_jax():
    try:
        import jax
        import jax.numpy as jnp
        import jax_cosmo
        from jaxpm import pm
    except ImportError as exc:
        raise ImportError(
            "the N-body simulator needs JaxPM and JAX: pip install 'diffinfer[nbody]' "
            f"(missing: {exc.name})"
        ) from exc
    return jax, jnp, jax_cosmo, pm


def leapfrog_factors(config: NBodyConfig, omega_m: float) -> dict[str, np.ndarray]:
    """Kick and drift factors of the kick-drift-kick steps (FastPM, Feng et al. 2016).

    With positions in mesh units, dx/da = p / (a^3 E) and dp/da = 1.5 Omega_m F / (a^2 E),
    F the particle-mesh force. The factors are those that move the linear growing mode
    exactly, for any step size: with G(a) = a^3 E dD/da (the growing mode's momentum per
    unit displacement field), a kick over [a0, a1] with the force at a_c adds
    F (G(a1) - G(a0)) / D(a_c), and a drift adds p (D(a1) - D(a0)) / G(a_c). Step i kicks
    over [a_i, a_i+1/2] with F(a_i), drifts over [a_i, a_i+1] with the momentum at
    a_i+1/2, and kicks over [a_i+1/2, a_i+1] with the new force; steps are uniform in a.
    Plain leapfrog factors (the integrals of 1/(a^2 E) and 1/(a^3 E)) lose 2-7 % of the
    large-scale amplitude in 10-40 steps from a = 0.1.
    """
    a = np.linspace(config.a_initial, 1.0, config.n_steps + 1)
    mid = 0.5 * (a[:-1] + a[1:])
    d, dd = growth(a, omega_m)
    _, dd_mid = growth(mid, omega_m)
    g = a**3 * hubble_rate(a, omega_m) * dd
    g_mid = mid**3 * hubble_rate(mid, omega_m) * dd_mid
    return {
        "kick1": (g_mid - g[:-1]) / d[:-1],
        "drift": (d[1:] - d[:-1]) / g_mid,
        "kick2": (g[1:] - g_mid) / d[1:],
    }


class NBodySimulator:
    """Particle-mesh N-body boxes and the maps cut from them.

    Parameters
    ----------
    config
        The run and map settings (default :class:`NBodyConfig`).
    """

    name = "nbody"
    suite = NBODY_SUITE

    def __init__(self, config: NBodyConfig | None = None) -> None:
        if config is not None and not isinstance(config, NBodyConfig):
            raise InputError(f"config must be an NBodyConfig, got {type(config).__name__}")
        self.config = config or NBodyConfig()

    @property
    def maps_per_box(self) -> int:
        """Maps one box gives (3 x n_slabs)."""
        return self.config.maps_per_box

    @cached_property
    def _run(self):
        jax, jnp, jc, pm = _import_jax()
        cfg = self.config
        n = cfg.n_particles
        shape = (n, n, n)
        box = [cfg.box_size] * 3

        def run(key, log_k, log_p, omega_m, kick1, drift, kick2):
            cosmo = jc.Cosmology(Omega_c=omega_m - OMEGA_B, Omega_b=OMEGA_B, h=HUBBLE,
                                 n_s=N_S, sigma8=0.8, Omega_k=0.0, w0=-1.0,
                                 wa=0.0)  # fmt: skip

            def spectrum(k):
                logk = jnp.log(jnp.maximum(k, 1e-8))
                return jnp.exp(jnp.interp(logk.ravel(), log_k, log_p)).reshape(k.shape)

            ic = pm.linear_field(shape, box, spectrum, seed=key)
            grid = jnp.stack(jnp.meshgrid(*[jnp.arange(s, dtype=jnp.float32) for s in shape],
                                          indexing="ij"), axis=-1).reshape(-1, 3)  # fmt: skip
            dx, p, _ = pm.lpt(cosmo, ic, grid, a=cfg.a_initial, order=2)
            pos = grid + dx.reshape(-1, 3)
            vel = p.reshape(-1, 3)

            def step(state, factors):
                pos, vel = state
                k1, d, k2 = factors
                vel = vel + k1 * pm.pm_forces(pos, mesh_shape=shape)
                pos = pos + d * vel
                vel = vel + k2 * pm.pm_forces(pos, mesh_shape=shape)
                return (pos, vel), None

            (pos, _), _ = jax.lax.scan(step, (pos, vel), (kick1, drift, kick2))
            return jnp.mod(pos, n), ic

        return jax.jit(run), jax, jnp

    def particles(self, theta: np.ndarray | torch.Tensor, seed: int, *,
                  linear: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Final (a = 1) particle positions of one box, in mesh units, shape (N^3, 3).

        Parameters
        ----------
        theta
            One parameter vector (Omega_m, sigma_8) inside the prior box.
        seed
            Seed of the initial conditions (a non-negative integer).
        linear
            Also return the box's linear density contrast at a = 1 on the mesh, shape
            (N, N, N): the Gaussian field the initial conditions were displaced by, the
            reference that cancels cosmic variance in a comparison with linear theory.
        """
        from diffinfer.validation import check_int

        theta = as_theta(theta, prior=self.config.prior).reshape(-1, 2)
        if len(theta) != 1:
            raise InputError(f"one parameter vector per box, got {len(theta)}")
        check_int("seed", seed, low=0)
        run, jax, jnp = self._run
        om, s8 = float(theta[0, 0]), float(theta[0, 1])
        k = torch.logspace(-4, 2, 512, dtype=torch.float64)
        pk = linear_power(k, torch.tensor([[om, s8]], dtype=torch.float64))[0]
        f = leapfrog_factors(self.config, om)
        state = np.random.SeedSequence(seed).generate_state(2, np.uint32)
        key = jax.random.PRNGKey(int(state[0]) << 1 | int(state[1] & 1))
        pos, ic = run(key, jnp.asarray(np.log(k.numpy()), jnp.float32),
                      jnp.asarray(np.log(pk.numpy()), jnp.float32), om,
                      *(jnp.asarray(f[name], jnp.float32)
                        for name in ("kick1", "drift", "kick2")))  # fmt: skip
        pos = np.asarray(pos, dtype=np.float64)
        return (pos, np.asarray(ic, dtype=np.float64)) if linear else pos

    def tracers(self, positions: np.ndarray) -> np.ndarray:
        """Virtual particles of the Lagrangian refinement (see :class:`NBodyConfig`).

        Parameters
        ----------
        positions
            Particle positions in mesh units, in the order of the Lagrangian grid
            (C order over (i, j, k)), shape (N^3, 3).

        Returns
        -------
        numpy.ndarray
            Positions in [0, N) of refine^3 N^3 tracers, shape (refine^3 N^3, 3).
        """
        cfg = self.config
        n, r = cfg.n_particles, cfg.refine
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (n**3, 3):
            raise InputError(f"positions must have shape ({n**3}, 3), got {pos.shape}")
        if r == 1:
            return np.mod(pos, n)
        grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64)] * 3, indexing="ij"),
                        axis=-1)  # fmt: skip
        disp = pos.reshape(n, n, n, 3) - grid
        disp -= n * np.round(disp / n)  # periodic: the shortest displacement
        # trilinear interpolation is separable: interpolate along each axis in turn
        fields = {(): disp}
        for axis in range(3):
            fields = {(*key, o): (1 - o / r) * d + (o / r) * np.roll(d, -1, axis=axis)
                      if o else d
                      for key, d in fields.items() for o in range(r)}  # fmt: skip
        out = [(grid + np.asarray(offset) / r + d).reshape(-1, 3)
               for offset, d in fields.items()]  # fmt: skip
        return np.mod(np.concatenate(out), n)

    def maps(self, positions: np.ndarray) -> np.ndarray:
        """Cut a box into slabs along x, y, z and paint each (CIC) onto the map grid.

        Parameters
        ----------
        positions
            Final particle positions in mesh units, in Lagrangian-grid order, shape (N^3, 3)
            (as :meth:`particles` returns them); refined to tracers first.

        Returns
        -------
        numpy.ndarray
            Density rho / rho_mean of the box, float32, shape (3 n_slabs, n_pix, n_pix):
            axis 0's slabs first, each axis' slabs in increasing order.
        """
        cfg = self.config
        n, m, slabs = cfg.n_particles, cfg.n_pix, cfg.n_slabs
        pos = self.tracers(positions)
        mean_count = len(pos) / (slabs * m * m)
        out = np.empty((3 * slabs, m, m), dtype=np.float32)
        for axis in range(3):
            u, v = (c for c in range(3) if c != axis)
            slab = np.minimum((pos[:, axis] * slabs / n).astype(np.int64), slabs - 1)
            pu, pv = pos[:, u] * m / n, pos[:, v] * m / n
            iu, iv = np.floor(pu), np.floor(pv)
            fu, fv = pu - iu, pv - iv
            iu, iv = iu.astype(np.int64), iv.astype(np.int64)
            counts = np.zeros(slabs * m * m)
            for du, wu in ((0, 1 - fu), (1, fu)):
                for dv, wv in ((0, 1 - fv), (1, fv)):
                    idx = (slab * m + (iu + du) % m) * m + (iv + dv) % m
                    counts += np.bincount(idx, weights=wu * wv, minlength=slabs * m * m)
            out[axis * slabs : (axis + 1) * slabs] = (counts / mean_count).reshape(slabs, m, m)
        return out

    def simulate(
        self,
        theta: np.ndarray | torch.Tensor,
        n: int | None = None,
        seed: int = 0,
        *,
        row_offset: int = 0,
    ) -> np.ndarray:
        """Maps of one box per parameter vector.

        Box b is seeded by child ``row_offset + b`` of ``numpy.random.SeedSequence(seed)``,
        so a data set can be written in chunks (and resumed) with the same maps.

        Parameters
        ----------
        theta
            One parameter vector (2,) or a batch (B, 2), inside the prior box.
        n
            Maps per parameter vector, at most 3 x n_slabs (default all of them); the first
            ``n`` of the box's maps are returned.
        seed, row_offset
            See above.

        Returns
        -------
        numpy.ndarray
            Densities, float32, shape (B, n, n_pix, n_pix).
        """
        from diffinfer.validation import check_int

        theta = as_theta(theta, prior=self.config.prior).reshape(-1, 2)
        per = self.maps_per_box
        n = per if n is None else check_int("n", n, low=1, high=per,
                                            what=f"maps per box: 3 axes x {self.config.n_slabs} "
                                                 "slabs")  # fmt: skip
        check_int("seed", seed, low=0)
        check_int("row_offset", row_offset, low=0)
        children = np.random.SeedSequence(seed).spawn(row_offset + len(theta))[row_offset:]
        out = np.empty((len(theta), n, self.config.n_pix, self.config.n_pix), np.float32)
        for b, child in enumerate(children):
            box_seed = int(child.generate_state(1, np.uint32)[0])
            out[b] = self.maps(self.particles(theta[b], box_seed))[:n]
        return out

    def description(self) -> dict:
        """What dataset.json records of the simulator."""
        import importlib.metadata as md

        versions = {}
        for pkg in ("jaxpm", "jax"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                versions[pkg] = None
        return {"simulator": self.name, "config": self.config.to_dict(), "versions": versions}


__all__ = ["NBODY_SUITE", "NBodyConfig", "NBodySimulator", "leapfrog_factors"]
