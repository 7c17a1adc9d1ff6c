// Pieces shared by the CPU and CUDA StopGradient ops: the OrtCustomOp wrapper, the
// exception barrier, and tensor helpers over the raw ONNX Runtime C API.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace onnx_stopgrad {

// An OrtCustomOp plus what its callbacks need to know. ORT hands the callbacks the
// OrtCustomOp pointer, which is static_cast back to this type.
struct StopGradientOp : OrtCustomOp {
  const OrtApi* api = nullptr;     // the negotiated API (callbacks without a kernel need it)
  const char* provider = nullptr;  // nullptr: CPUExecutionProvider
  ONNXTensorElementDataType element_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // UNDEFINED: any
};

// Per-node kernel state: the API table ORT created the kernel with.
struct StopGradientKernel {
  const OrtApi* api;
};

// Fills the callbacks common to every variant (name, one required input and output of
// `element_type`, output 0 aliases input 0, output shape = input shape, kernel creation
// and destruction). `compute` does the per-provider work.
void InitStopGradientOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version, const char* provider,
                        ONNXTensorElementDataType element_type,
                        OrtStatusPtr(ORT_API_CALL* compute)(void* kernel, OrtKernelContext* context));

// Runs `body` and turns any C++ exception into an OrtStatus, so none crosses the C ABI.
template <typename Body>
OrtStatusPtr CatchAll(const OrtApi& api, Body&& body) noexcept;

// Shape, element type and element count of a tensor.
struct TensorDesc {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  size_t count = 0;
};

OrtStatusPtr DescribeTensor(const OrtApi& api, const OrtValue* value, TensorDesc* out);

// Bytes that `count` elements of fixed-size type `type` occupy (sub-byte types packed).
OrtStatusPtr TensorBytes(const OrtApi& api, ONNXTensorElementDataType type, size_t count, size_t* out);

// Input 0, output 0 (allocated with the input's shape) and both data pointers.
struct IdentityIo {
  TensorDesc desc;
  const OrtValue* input = nullptr;
  OrtValue* output = nullptr;
  void* src = nullptr;
  void* dst = nullptr;
};

OrtStatusPtr GetIdentityIo(const OrtApi& api, OrtKernelContext* context, IdentityIo* io);

OrtStatusPtr MakeStatus(const OrtApi& api, OrtErrorCode code, const char* message) noexcept;

}  // namespace onnx_stopgrad

#define ONNX_STOPGRAD_RETURN_IF_ERROR(expr)       \
  do {                                            \
    OrtStatusPtr onnx_stopgrad_status_ = (expr);  \
    if (onnx_stopgrad_status_ != nullptr) {       \
      return onnx_stopgrad_status_;               \
    }                                             \
  } while (0)

#include "op_common_inl.h"
