// Launcher for StopGradient's device work. Returns the CUDA error so the caller can turn
// it into an OrtStatus; it never throws.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace onnx_stopgrad {

// Copies `bytes` bytes from `src` to `dst` (both device memory) on `stream`, asynchronously.
cudaError_t LaunchStopGradientCopy(cudaStream_t stream, void* dst, const void* src, size_t bytes);

}  // namespace onnx_stopgrad
