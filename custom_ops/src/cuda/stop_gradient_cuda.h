// StopGradient for CUDAExecutionProvider: one typed op per numeric element type (string
// tensors never live on a GPU), device-to-device copy on ORT's stream when needed, through
// the CUDA driver loaded at run time (cuda_driver.h).
#pragma once

#include <array>

#include "../op_common.h"

namespace onnx_stopgrad {

inline constexpr std::array<ONNXTensorElementDataType, 13> kCudaElementTypes = {
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,  ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8,   ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL,
};

// Whether the CUDA driver loads here (the CUDA ops are registered only then).
bool CudaOpsAvailable() noexcept;

void InitStopGradientCudaOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version,
                            ONNXTensorElementDataType element_type);

}  // namespace onnx_stopgrad
