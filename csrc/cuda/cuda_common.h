// CUDA helpers for the FFI handlers: launch checks and grid sizing.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "ffi_common.h"

namespace bj {

constexpr int kMaxDevices = 64;     // devices whose multiprocessor count sm_count() caches
constexpr int kFallbackSms = 132;   // if the query fails (an H100's count; it only sizes heuristics)

inline ffi::Error cuda_status(const char* who) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return ffi::Error::Internal(std::string(who) + ": CUDA error: " + cudaGetErrorString(err));
  return ffi::Error::Success();
}

inline unsigned grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

// Multiprocessors of the current device, queried once per device (host calls only, so it is
// safe while XLA captures the stream into a CUDA graph).
inline int sm_count() {
  static std::atomic<int> cached[kMaxDevices] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return kFallbackSms;
  int n = cached[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = kFallbackSms;
    cached[dev].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace bj
