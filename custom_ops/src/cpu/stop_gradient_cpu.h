// StopGradient for CPUExecutionProvider: every tensor element type, zero copy when ORT
// gives the output the input's buffer.
#pragma once

#include "../op_common.h"

namespace onnx_stopgrad {

// The CPU variant accepts any element type (the output takes the input's type).
void InitStopGradientCpuOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version);

}  // namespace onnx_stopgrad
