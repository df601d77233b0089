"""The models shipped with diffinfer: one directory per model (``weights.safetensors`` and
``card.json``) and fitted power-spectrum likelihoods (``<name>-power.npz``).

In the repository they live in the top-level ``models/`` folder; the build maps it into the
wheel as the package ``diffinfer.models``, where :func:`diffinfer.store.shipped_models_dir`
finds it.
"""
