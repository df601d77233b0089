"""Likelihoods of a map given theta: the diffusion model's (its terms, proposal and control
variate), the Gaussian power-spectrum likelihood, neural posterior estimators used as
references, their Pyro distributions, and the temperature that widens a likelihood."""
