// Template definitions for op_common.h.
#pragma once

#include <cstdio>
#include <exception>
#include <new>

namespace onnx_stopgrad {

template <typename Body>
OrtStatusPtr CatchAll(const OrtApi& api, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return MakeStatus(api, ORT_FAIL, "onnx_stopgrad: out of memory");
  } catch (const std::exception& exc) {
    char message[512];
    std::snprintf(message, sizeof(message), "onnx_stopgrad: %s", exc.what());
    return MakeStatus(api, ORT_FAIL, message);
  } catch (...) {
    return MakeStatus(api, ORT_FAIL, "onnx_stopgrad: unknown C++ exception");
  }
}

}  // namespace onnx_stopgrad
