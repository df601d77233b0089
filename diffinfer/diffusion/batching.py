"""Denoiser calls of several threads run as one batch: the network path of many posteriors.

A posterior's computation (locator, aligned grid, added timesteps) is control flow that
depends on its own map; its network calls are what costs. :class:`SharedNetwork` lets each
map's computation run in its own thread, as written for one map, while the denoiser calls of
all of them meet: a thread that calls the network waits until every member thread is waiting
on the network (or has finished), and then one batch of maps x theta x timesteps goes through
the network, in chunks of ``chunk`` denoiser evaluations, and each thread gets its own rows
back. The result of each row is that of the one-map call, up to the floating-point
differences of a different batch shape.

:func:`denoise` is the one network call of the diffusion likelihood, shared or not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from diffinfer.diffusion.model import DiffusionModel, autocast
from diffinfer.errors import InputError

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(x_t (B, 1, N, N), t (B,), theta (B, 2)) on the model's device, in the network's dtype."""


def denoise(model: DiffusionModel, inputs: Inputs, wiener: bool,
            precision: str) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """eps_hat of the model on ``inputs`` in ``precision`` (autocast), and with ``wiener``
    eps_W, the output of its spectral branch alone (else None)."""
    with autocast(model.device, precision):
        if wiener:
            rest, eps_w = model.denoiser.parts(*inputs)
            return rest + eps_w, eps_w
        return model(*inputs), None


class _Request:
    __slots__ = ("done", "error", "inputs", "key", "result")

    def __init__(self, inputs: Inputs, key: tuple[bool, str]) -> None:
        self.inputs, self.key = inputs, key
        self.result: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.error: BaseException | None = None
        self.done = False


class SharedNetwork:
    """One model's denoiser calls from ``members`` threads, batched together.

    Parameters
    ----------
    model
        The diffusion model every member calls.
    members
        The threads that will call it. Each calls :meth:`__call__` (through the likelihood's
        ``network`` attribute) and, once finished, :meth:`leave` (or runs in
        :meth:`member`), so that the others never wait for it.
    chunk
        Denoiser evaluations per network call of a batch (bounds memory; on a GPU the
        larger, the faster).

    Notes
    -----
    ``batches`` and ``evaluations`` count the network calls and denoiser evaluations made,
    for reports and benchmarks.
    """

    def __init__(self, model: DiffusionModel, members: int, chunk: int) -> None:
        if int(members) != members or members < 1:
            raise InputError(f"members must be a positive integer, got {members!r}")
        if int(chunk) != chunk or chunk < 1:
            raise InputError(f"chunk must be a positive integer, got {chunk!r}")
        self.model, self.chunk = model, int(chunk)
        self._live = int(members)
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self.batches = 0
        self.evaluations = 0

    def __call__(self, inputs: Inputs, wiener: bool,
                 precision: str) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """The output of :func:`denoise` on ``inputs``, computed in a batch with the other
        members' calls."""
        req = _Request(inputs, (bool(wiener), str(precision)))
        with self._cond:
            if self._live < 1:
                raise RuntimeError("SharedNetwork called by a thread that has left it")
            self._pending.append(req)
            if len(self._pending) >= self._live:
                self._flush()
            while not req.done:
                self._cond.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def leave(self) -> None:
        """A member has finished: the others no longer wait for its calls."""
        with self._cond:
            self._live -= 1
            if self._pending and len(self._pending) >= self._live:
                self._flush()

    @contextmanager
    def member(self) -> Iterator[SharedNetwork]:
        """Run a member's work: :meth:`leave` when it ends, however it ends."""
        try:
            yield self
        finally:
            self.leave()

    def _flush(self) -> None:
        """Run every pending request (the lock held: all other members are waiting)."""
        pending, self._pending = self._pending, []
        groups: dict[tuple[bool, str], list[_Request]] = {}
        for req in pending:
            groups.setdefault(req.key, []).append(req)
        for (wiener, precision), reqs in groups.items():
            try:
                self._run(reqs, wiener, precision)
            except BaseException as exc:  # every waiting member gets the error
                for req in reqs:
                    req.error = exc
        for req in pending:
            req.done = True
        self._cond.notify_all()

    def _run(self, reqs: list[_Request], wiener: bool, precision: str) -> None:
        sizes = [len(r.inputs[0]) for r in reqs]
        inputs = tuple(torch.cat([r.inputs[i] for r in reqs]) for i in range(3))
        eps, eps_w = [], []
        for lo in range(0, sum(sizes), self.chunk):
            part = tuple(x[lo : lo + self.chunk] for x in inputs)
            with torch.no_grad():
                e, w = denoise(self.model, part, wiener, precision)  # type: ignore[arg-type]
            eps.append(e)
            eps_w.append(w)
            self.batches += 1
        self.evaluations += sum(sizes)
        eps_all = torch.cat(eps).split(sizes)
        w_all = torch.cat(eps_w).split(sizes) if wiener else [None] * len(reqs)
        for req, e, w in zip(reqs, eps_all, w_all, strict=True):
            req.result = (e, w)
