"""compass-jax: JAX/Flax Compass-Embedding v4 (multilingual e-commerce text embeddings)."""

__version__ = "0.1.0"
