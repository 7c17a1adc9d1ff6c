#include "cuda_driver.h"

#include "../platform/shared_library.h"

namespace onnx_stopgrad {
namespace {

#ifdef _WIN32
constexpr const char* kDriverLibrary = "nvcuda.dll";
#else
constexpr const char* kDriverLibrary = "libcuda.so.1";
#endif

template <typename Function>
bool Bind(LibraryHandle library, const char* symbol, Function* out) {
  *out = reinterpret_cast<Function>(FindSymbol(library, symbol));
  return *out != nullptr;
}

const CudaDriver* LoadCudaDriver() noexcept {
  LibraryHandle library = LoadSharedLibrary(kDriverLibrary);
  if (library == nullptr) return nullptr;
  static CudaDriver driver;
  // The _v2 names are what cuda.h's macros resolve to since CUDA 3.2.
  const bool complete = Bind(library, "cuMemcpyDtoDAsync_v2", &driver.MemcpyDtoDAsync) &&
                        Bind(library, "cuCtxGetCurrent", &driver.CtxGetCurrent) &&
                        Bind(library, "cuCtxPushCurrent_v2", &driver.CtxPushCurrent) &&
                        Bind(library, "cuCtxPopCurrent_v2", &driver.CtxPopCurrent) &&
                        Bind(library, "cuStreamGetCtx", &driver.StreamGetCtx) &&
                        Bind(library, "cuGetErrorName", &driver.GetErrorName) &&
                        Bind(library, "cuGetErrorString", &driver.GetErrorString);
  return complete ? &driver : nullptr;
}

}  // namespace

const CudaDriver* GetCudaDriver() noexcept {
  static const CudaDriver* const driver = LoadCudaDriver();
  return driver;
}

CUresult CopyDeviceToDevice(const CudaDriver& driver, void* stream, void* dst, const void* src,
                            size_t bytes) noexcept {
  if (bytes == 0 || dst == src) return kCudaSuccess;
  const auto cu_stream = static_cast<CUstream>(stream);
  const auto copy = [&]() {
    // A D2D memcpy on ORT's stream stays ordered with the kernels around it and runs at
    // copy-engine bandwidth; a hand-written kernel would gain nothing for an identity.
    return driver.MemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst), reinterpret_cast<CUdeviceptr>(src),
                                  bytes, cu_stream);
  };
  if (cu_stream == nullptr) return copy();  // the legacy default stream of the current context
  CUcontext current = nullptr;
  CUcontext owner = nullptr;
  CUresult result = driver.CtxGetCurrent(&current);
  if (result == kCudaSuccess) result = driver.StreamGetCtx(cu_stream, &owner);
  if (result != kCudaSuccess) return result;
  if (owner == current) return copy();
  result = driver.CtxPushCurrent(owner);
  if (result != kCudaSuccess) return result;
  result = copy();
  CUcontext popped = nullptr;
  const CUresult pop = driver.CtxPopCurrent(&popped);
  return result != kCudaSuccess ? result : pop;
}

}  // namespace onnx_stopgrad
