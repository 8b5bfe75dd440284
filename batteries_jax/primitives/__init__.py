"""JAX primitives, one module per family, each with its abstract evaluation, lowering, JVP,
transpose and batching rules side by side."""
