"""Locating the posterior of a diffusion likelihood: Levenberg-Marquardt on log L = -||r||^2.

The likelihood is a nonlinear least-squares problem in theta; :class:`GaussNewtonLocator` (a
base of :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood`) gives its residual
vector and its maximum with the Gauss-Newton covariance, which the aligned grid of a
posterior is centred on (:mod:`diffinfer.inference.gridding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffinfer.errors import LocateError
from diffinfer.parameters import as_theta


@dataclass(frozen=True)
class Location:
    """Result of :meth:`DiffusionLikelihood.locate`."""

    theta: np.ndarray  # (2,) maximum-likelihood theta
    cov: np.ndarray  # (2, 2) inverse Gauss-Newton Hessian of log L (untempered)
    n_evaluations: int  # likelihood evaluations (theta points) spent
    iterations: int


class GaussNewtonLocator:
    """The locator of :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood`: its
    residuals and the Levenberg-Marquardt search for its maximum."""

    def residuals(self, theta: np.ndarray | torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """The weighted residual vector r(theta) of each row of theta, (B, M) float64, with
        log L(theta) = -||r(theta)||^2: sqrt(weight_k / n_noise) (eps_hat - target) for every
        term and draw, flattened. The likelihood is a nonlinear least-squares problem in theta,
        which :meth:`locate` solves by Gauss-Newton. Computed in ``precision`` (default fp32,
        so that finite differences of r are not swamped by bf16 rounding). This is the plain
        estimate even with the control variate (whose closed-form part is not a sum of
        squares): the same expectation, with more Monte Carlo noise, which is enough to
        locate the posterior that the likelihood itself then resolves.
        """
        th = as_theta(theta).cpu()
        scale = (self.plan.weights / self.n_noise).sqrt().repeat_interleave(self._draws)
        with torch.no_grad():  # finite differences: no graph (about 1 GB per theta row)
            diffs = torch.cat(list(self._differences(th.detach(), precision)))
        diffs = diffs.reshape(th.shape[0], -1, diffs[0].numel())
        return (diffs * scale[None, :, None]).reshape(th.shape[0], -1)

    def locate(
        self,
        start: np.ndarray | None = None,
        *,
        max_iter: int = 15,
        tol: float = 0.01,
    ) -> Location:
        """Maximum-likelihood theta and the Gauss-Newton covariance of the likelihood.

        Levenberg-Marquardt on log L = -||r(theta)||^2 (:meth:`residuals`), in the unit
        coordinates of the prior box, with the Jacobian of r from forward differences
        (steps of about 0.3 of the current standard deviation). The Gauss-Newton Hessian
        2 J^T J is the Fisher information of the likelihood (the residual term has mean zero
        at the truth), so its inverse is the covariance of a Gaussian approximation.

        Parameters
        ----------
        start
            Starting theta (default: the centre of the prior box).
        max_iter
            Iterations at most (each costs 3 likelihood evaluations, 1 if its step is
            rejected).
        tol
            Stop when the step's predicted gain in log L is below this (nats).

        Raises
        ------
        LocateError
            Non-finite residuals or Jacobian, a singular Gauss-Newton Hessian, or no
            convergence: the message names the cause.
        """
        prior = self.model.field.prior
        low, width = np.asarray(prior.low, float), np.asarray(prior.width, float)
        s = np.full(2, 0.5) if start is None else (np.asarray(start, float) - low) / width
        margin = 1e-3

        def r_of(points: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                r = self.residuals(low + points * width).numpy()
            if not np.all(np.isfinite(r)):
                raise LocateError("the likelihood's residuals are not finite (NaN or inf from "
                                  "the denoiser)")  # fmt: skip
            return r

        r0 = r_of(s[None])[0]
        loss0, n_eval = float(r0 @ r0), 1
        h = np.full(2, 0.02)
        lam, jac, converged, it = 1e-3, None, False, 0
        for it in range(1, max_iter + 1):  # noqa: B007 (it is reported)
            if jac is None:
                sign = np.where(s + h > 1 - margin, -1.0, 1.0)
                pts = s[None] + np.diag(sign * h)
                jac = (r_of(pts) - r0[None]) / (sign * h)[:, None]  # (2, M): dr / ds
                n_eval += 2
            a = jac @ jac.T
            g = jac @ r0
            if not (np.all(np.isfinite(a)) and np.linalg.det(a) > 0):
                raise LocateError("the Gauss-Newton Hessian is singular or not finite")
            step = -np.linalg.solve(a + lam * np.diag(np.diag(a)), g)
            # stay inside the prior box: clip the step at its faces
            trial = np.clip(s + step, margin, 1 - margin)
            step = trial - s
            gain = -(2 * g @ step + step @ a @ step)  # predicted decrease of ||r||^2
            if gain < tol and lam <= 1e-2:
                converged = True  # at the maximum, or at the box face it pushes against
                break
            r1 = r_of(trial[None])[0]
            n_eval += 1
            loss1 = float(r1 @ r1)
            if loss1 < loss0:
                s, r0, loss0, jac = trial, r1, loss1, None
                lam = max(lam / 10, 1e-6)
                sd = np.sqrt(np.diag(np.linalg.inv(2 * a)))
                h = np.clip(0.3 * sd, 1e-4, 0.05)
            else:
                lam *= 10
                if lam > 1e6:
                    raise LocateError("Levenberg-Marquardt made no progress (the likelihood "
                                      "is not smooth enough around its maximum)")  # fmt: skip
        if not converged:
            raise LocateError(f"Gauss-Newton did not converge in {max_iter} iterations")
        cov_unit = np.linalg.inv(2 * jac @ jac.T)
        cov = cov_unit * np.outer(width, width)
        if not (np.all(np.isfinite(cov)) and np.all(np.linalg.eigvalsh(cov) > 0)):
            raise LocateError("the Gauss-Newton covariance is not positive definite")
        return Location(low + s * width, cov, n_eval, it)
