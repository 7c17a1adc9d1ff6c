#include "stop_gradient_cuda.h"

#include <cstdio>

#include "cuda_driver.h"

namespace onnx_stopgrad {
namespace {

constexpr const char* kCudaProvider = "CUDAExecutionProvider";

OrtStatusPtr CudaStatus(const OrtApi& api, const CudaDriver& driver, CUresult error) {
  if (error == kCudaSuccess) return nullptr;
  const char* name = nullptr;
  const char* text = nullptr;
  if (driver.GetErrorName(error, &name) != kCudaSuccess || name == nullptr) name = "unknown CUDA error";
  if (driver.GetErrorString(error, &text) != kCudaSuccess || text == nullptr) text = "no description";
  char message[256];
  std::snprintf(message, sizeof(message), "onnx_stopgrad: StopGradient CUDA copy failed: %s (%s, %d)", text,
                name, error);
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
    const CudaDriver* driver = GetCudaDriver();
    if (driver == nullptr) {  // cannot happen: the op is registered only with a driver
      return MakeStatus(api, ORT_EP_FAIL, "onnx_stopgrad: the CUDA driver (libcuda) is not loaded");
    }
    size_t bytes = 0;
    ONNX_STOPGRAD_RETURN_IF_ERROR(TensorBytes(api, io.desc.type, io.desc.count, &bytes));
    void* stream = nullptr;
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.KernelContext_GetGPUComputeStream(context, &stream));
    return CudaStatus(api, *driver, CopyDeviceToDevice(*driver, stream, io.dst, io.src, bytes));
  });
}

}  // namespace

bool CudaOpsAvailable() noexcept { return GetCudaDriver() != nullptr; }

void InitStopGradientCudaOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version,
                            ONNXTensorElementDataType element_type) {
  InitStopGradientOp(op, api, api_version, kCudaProvider, element_type, ComputeCuda);
}

}  // namespace onnx_stopgrad
