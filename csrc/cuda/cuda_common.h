// CUDA helpers for the FFI handlers: launch checks and grid sizing.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "ffi_common.h"

namespace bj {

inline ffi::Error cuda_status(const char* who) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return ffi::Error::Internal(std::string(who) + ": CUDA error: " + cudaGetErrorString(err));
  return ffi::Error::Success();
}

inline unsigned grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace bj
