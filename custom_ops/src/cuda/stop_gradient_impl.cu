#include "stop_gradient_impl.cuh"

namespace onnx_stopgrad {

cudaError_t LaunchStopGradientCopy(cudaStream_t stream, void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return cudaSuccess;
  // A D2D memcpy on ORT's stream stays ordered with the kernels around it and runs at
  // copy-engine bandwidth; a hand-written kernel would gain nothing for an identity.
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}

}  // namespace onnx_stopgrad
