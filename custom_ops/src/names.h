// The op's identity on the C++ side. The Python side is onnx_stopgrad/_names.py;
// tests/op/test_names.py proves the two agree.
#pragma once

#include <cstdint>

namespace onnx_stopgrad {

// Custom ONNX domain of the op.
inline constexpr const char* kDomain = "onnx_stopgrad";
// Op type of the node that blocks gradients.
inline constexpr const char* kOpType = "StopGradient";
// Oldest ONNX Runtime C API the library accepts (1.18: alias maps for zero copy).
// Matches MIN_ORT_VERSION = "1.18" in _names.py.
inline constexpr uint32_t kMinOrtApiVersion = 18;

}  // namespace onnx_stopgrad
