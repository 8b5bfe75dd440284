// Host/device qualifiers for per-element math shared by the CPU and CUDA handlers.
#pragma once
#if defined(__CUDACC__)
#define BJ_HD __host__ __device__ __forceinline__
#else
#define BJ_HD inline
#endif
