"""Training a conditional diffusion model: the configuration schema and the training run."""
