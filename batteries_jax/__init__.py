"""batteries_jax: CUDA kernels for equivariant GNNs (MACE, NequIP, Allegro) as JAX primitives.

Seed-layout functions live here; ``batteries_jax.e3nn`` has drop-ins taking and returning
``e3nn_jax.IrrepsArray``.
"""
from batteries_jax._ffi import WITH_CUDA
from batteries_jax.graph import Graph
from batteries_jax.spherical_harmonics import spherical_harmonics, spherical_harmonics_backward
from batteries_jax.tensor_products import (
    fused_sh_tp_simple,
    get_tp_num_paths,
    get_tp_path_info,
    tensor_product,
    tensor_product_simple,
)

__version__ = "0.1.0"

__all__ = [
    "WITH_CUDA",
    "Graph",
    "spherical_harmonics",
    "spherical_harmonics_backward",
    "tensor_product_simple",
    "tensor_product",
    "fused_sh_tp_simple",
    "get_tp_num_paths",
    "get_tp_path_info",
]
