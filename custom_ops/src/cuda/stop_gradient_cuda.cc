#include "stop_gradient_cuda.h"

#include <cuda_runtime_api.h>

#include <cstdio>

#include "stop_gradient_impl.cuh"

namespace onnx_stopgrad {
namespace {

constexpr const char* kCudaProvider = "CUDAExecutionProvider";

OrtStatusPtr CudaStatus(const OrtApi& api, cudaError_t error) {
  if (error == cudaSuccess) return nullptr;
  char message[256];
  std::snprintf(message, sizeof(message), "onnx_stopgrad: StopGradient CUDA copy failed: %s (%s)",
                cudaGetErrorString(error), cudaGetErrorName(error));
  return MakeStatus(api, ORT_EP_FAIL, message);
}

OrtStatusPtr ORT_API_CALL ComputeCuda(void* kernel, OrtKernelContext* context) noexcept {
  const OrtApi& api = *static_cast<StopGradientKernel*>(kernel)->api;
  return CatchAll(api, [&]() -> OrtStatusPtr {
    IdentityIo io;
    ONNX_STOPGRAD_RETURN_IF_ERROR(GetIdentityIo(api, context, &io));
    if (io.src == io.dst || io.desc.count == 0) {
      return nullptr;  // aliased by ORT (or nothing to copy): zero copy
    }
    size_t bytes = 0;
    ONNX_STOPGRAD_RETURN_IF_ERROR(TensorBytes(api, io.desc.type, io.desc.count, &bytes));
    void* stream = nullptr;
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.KernelContext_GetGPUComputeStream(context, &stream));
    return CudaStatus(api, LaunchStopGradientCopy(static_cast<cudaStream_t>(stream), io.dst, io.src, bytes));
  });
}

}  // namespace

void InitStopGradientCudaOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version,
                            ONNXTensorElementDataType element_type) {
  InitStopGradientOp(op, api, api_version, kCudaProvider, element_type, ComputeCuda);
}

}  // namespace onnx_stopgrad
