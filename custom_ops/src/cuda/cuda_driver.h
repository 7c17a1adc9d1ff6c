// The few CUDA driver API entry points the CUDA op needs, looked up at run time in the
// driver library (libcuda.so.1 / nvcuda.dll). No CUDA toolkit, header or runtime library
// is needed to build or load onnx_stopgrad; the driver ABI used here is stable across
// CUDA 11, 12 and 13, so the op runs under whichever CUDA build of ONNX Runtime is loaded.
#pragma once

#include <cstddef>

namespace onnx_stopgrad {

#ifdef _WIN32
#define ONNX_STOPGRAD_CUDAAPI __stdcall
#else
#define ONNX_STOPGRAD_CUDAAPI
#endif

// Declared here as in cuda.h (64-bit platforms).
using CUresult = int;
using CUdeviceptr = unsigned long long;
using CUstream = struct CUstream_st*;
using CUcontext = struct CUctx_st*;
inline constexpr CUresult kCudaSuccess = 0;

struct CudaDriver {
  CUresult(ONNX_STOPGRAD_CUDAAPI* MemcpyDtoDAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes,
                                                   CUstream stream) = nullptr;
  CUresult(ONNX_STOPGRAD_CUDAAPI* CtxGetCurrent)(CUcontext* context) = nullptr;
  CUresult(ONNX_STOPGRAD_CUDAAPI* CtxPushCurrent)(CUcontext context) = nullptr;
  CUresult(ONNX_STOPGRAD_CUDAAPI* CtxPopCurrent)(CUcontext* context) = nullptr;
  CUresult(ONNX_STOPGRAD_CUDAAPI* StreamGetCtx)(CUstream stream, CUcontext* context) = nullptr;
  CUresult(ONNX_STOPGRAD_CUDAAPI* GetErrorName)(CUresult error, const char** name) = nullptr;
  CUresult(ONNX_STOPGRAD_CUDAAPI* GetErrorString)(CUresult error, const char** text) = nullptr;
};

// The driver, loaded on the first call; nullptr where it is absent (no NVIDIA driver, or
// one too old to have every entry point above). Thread-safe; never unloaded.
const CudaDriver* GetCudaDriver() noexcept;

// Copies `bytes` bytes of device memory from `src` to `dst` on `stream`, asynchronously,
// in the stream's context (made current for the call when another one is).
CUresult CopyDeviceToDevice(const CudaDriver& driver, void* stream, void* dst, const void* src,
                            size_t bytes) noexcept;

}  // namespace onnx_stopgrad
