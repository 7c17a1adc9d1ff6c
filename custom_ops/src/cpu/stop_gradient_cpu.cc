#include "stop_gradient_cpu.h"

#include <cstring>

namespace onnx_stopgrad {
namespace {

// Element-wise string copy: the lengths come from ORT, so embedded NULs survive.
OrtStatusPtr CopyStrings(const OrtApi& api, const IdentityIo& io) {
  for (size_t i = 0; i < io.desc.count; ++i) {
    size_t length = 0;
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetStringTensorElementLength(io.input, i, &length));
    char* buffer = nullptr;
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetResizedStringTensorElementBuffer(io.output, i, length, &buffer));
    if (length > 0) {
      ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetStringTensorElement(io.input, length, i, buffer));
    }
  }
  return nullptr;
}

OrtStatusPtr ORT_API_CALL ComputeCpu(void* kernel, OrtKernelContext* context) noexcept {
  const OrtApi& api = *static_cast<StopGradientKernel*>(kernel)->api;
  return CatchAll(api, [&]() -> OrtStatusPtr {
    IdentityIo io;
    ONNX_STOPGRAD_RETURN_IF_ERROR(GetIdentityIo(api, context, &io));
    if (io.src == io.dst || io.desc.count == 0) {
      return nullptr;  // aliased by ORT (or nothing to copy): zero copy
    }
    if (io.desc.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) {
      return CopyStrings(api, io);
    }
    size_t bytes = 0;
    ONNX_STOPGRAD_RETURN_IF_ERROR(TensorBytes(api, io.desc.type, io.desc.count, &bytes));
    std::memcpy(io.dst, io.src, bytes);
    return nullptr;
  });
}

}  // namespace

void InitStopGradientCpuOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version) {
  InitStopGradientOp(op, api, api_version, /*provider=*/nullptr, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED,
                     ComputeCpu);
}

}  // namespace onnx_stopgrad
