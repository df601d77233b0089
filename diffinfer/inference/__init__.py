"""Posteriors from a likelihood and the prior: ``posterior()`` (the dispatcher), its options,
the grid marginaliser, the emcee and NUTS back ends, the two-stage sampler, samples, the
Monte Carlo error of a stochastic likelihood and the goodness-of-fit check."""
