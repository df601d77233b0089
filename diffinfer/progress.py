"""Progress bars of the long computations: one bar per posterior, counted in likelihood
evaluations (theta points), advanced from inside a network likelihood chunk by chunk.

A posterior of the network on a CPU spends seconds per theta point (timesteps x noise draws
denoiser calls), so the bar is advanced by fractions of an evaluation as the likelihood's
chunks of denoiser calls finish
(:attr:`diffinfer.likelihoods.diffusion.DiffusionLikelihood.on_chunk`):
it moves within the first second. The total is the method's plan (the grid: the locator's
usual cost and the aligned grid's points; emcee: walkers x the chain length the
autocorrelation time asks for), raised when the work turns out larger, so the remaining time
tqdm shows is an estimate that improves as the plan firms up. The bar reaches 100 % once, when
the computation ends: work beyond the plan (a grid extended, timesteps added) keeps it below
:data:`OVERRUN_SHOWN`, with the phase named after the counts.
"""

from __future__ import annotations

from tqdm.auto import tqdm

OVERRUN_SHOWN = 0.95
"""Where a bar whose work outran its plan stays (a fraction of its total) until it ends."""

SHOW_AFTER = 0.5
"""Seconds before a bar appears: posteriors that finish sooner (the exact likelihood's)
print nothing."""


class EvaluationBar:
    """A tqdm bar over likelihood evaluations with a total that can grow.

    Parameters
    ----------
    enabled
        False: a silent bar (it counts, but shows nothing and creates no tqdm object).
    desc
        The bar's label.
    total
        The planned number of evaluations.
    unit
        What one step of the bar counts.
    """

    def __init__(self, enabled: bool, desc: str, total: float, unit: str = "evaluations") -> None:
        self._n, self._total = 0.0, float(total)
        self.bar = None if not enabled else tqdm(
            total=float(total),
            desc=desc,
            leave=False,
            delay=SHOW_AFTER,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} " + unit
            + " [{elapsed}<{remaining}{postfix}]",
        )  # fmt: skip

    # The counts live here; the tqdm bar (none when disabled: tqdm's multiprocessing lock
    # is a semaphore, which a calibration worker stopped by SIGTERM would leak) shows them.

    @property
    def n(self) -> float:
        """Evaluations counted so far."""
        return self._n

    @property
    def total(self) -> float:
        """The planned number of evaluations."""
        return self._total

    def advance(self, amount: float) -> None:
        """Count ``amount`` more evaluations; past the plan, the total grows ahead of them
        (the bar reaches 100 % only at :meth:`close`)."""
        if amount <= 0:
            return
        self._n += amount
        if self._n >= OVERRUN_SHOWN * self._total:
            self._total = self._n / OVERRUN_SHOWN
        if self.bar is not None:
            self.bar.total = self._total
            self.bar.update(amount)

    def plan(self, remaining: float) -> None:
        """Set the total to what is done plus ``remaining`` (with nothing remaining, the
        bar stays just short of its end until :meth:`close`)."""
        self._total = max(self._n + max(0.0, float(remaining)), self._n / OVERRUN_SHOWN)
        if self.bar is not None:
            self.bar.total = self._total
            self.bar.refresh()

    def stage(self, text: str) -> None:
        """Show what the computation is doing now (after the bar's counts)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """End the bar: the total becomes what was done (100 %), and the bar is removed."""
        self._total = self._n
        if self.bar is not None:
            self.bar.total = self._n
            self.bar.refresh()
            self.bar.close()

    def __enter__(self) -> EvaluationBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
