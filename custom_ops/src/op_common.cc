#include "op_common.h"

#include "names.h"

namespace onnx_stopgrad {
namespace {

const StopGradientOp& AsStopGradient(const OrtCustomOp* op) {
  return *static_cast<const StopGradientOp*>(op);
}

const char* ORT_API_CALL GetName(const OrtCustomOp*) { return kOpType; }

const char* ORT_API_CALL GetProvider(const OrtCustomOp* op) { return AsStopGradient(op).provider; }

ONNXTensorElementDataType ORT_API_CALL GetElementType(const OrtCustomOp* op, size_t) {
  return AsStopGradient(op).element_type;
}

size_t ORT_API_CALL GetOne(const OrtCustomOp*) { return 1; }

OrtCustomOpInputOutputCharacteristic ORT_API_CALL GetRequired(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}

OrtMemType ORT_API_CALL GetInputMemoryType(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }

int ORT_API_CALL GetVariadicMinArity(const OrtCustomOp*) { return 1; }

int ORT_API_CALL GetVariadicHomogeneity(const OrtCustomOp*) { return 1; }

OrtStatusPtr ORT_API_CALL CreateKernel(const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo*,
                                       void** kernel) noexcept {
  return CatchAll(*api, [&]() -> OrtStatusPtr {
    *kernel = new StopGradientKernel{api};
    return nullptr;
  });
}

void ORT_API_CALL DestroyKernel(void* kernel) noexcept { delete static_cast<StopGradientKernel*>(kernel); }

// Output 0 is input 0: ORT then gives the output the input's buffer wherever it can
// (not for graph outputs), and the kernel has nothing to copy.
size_t ORT_API_CALL GetInputZeroOutputZero(int** input_index, int** output_index) {
  *input_index = new (std::nothrow) int[1]{0};
  *output_index = new (std::nothrow) int[1]{0};
  if (*input_index == nullptr || *output_index == nullptr) {
    delete[] *input_index;
    delete[] *output_index;
    *input_index = *output_index = nullptr;
    return 0;
  }
  return 1;
}

void ORT_API_CALL ReleaseIndexPair(int* input_index, int* output_index) {
  delete[] input_index;
  delete[] output_index;
}

// Output shape = input shape, so that ORT's graph optimizers (e.g. MatMul+Add -> Gemm
// after a stop) see the shape they would see without the stop. Left unset where the C API
// cannot say it exactly: rank 0 (a scalar and an unknown rank look alike) and unnamed
// unknown dims (they would come back as dim_value -1).
OrtStatusPtr ORT_API_CALL InferOutputShape(const OrtCustomOp* op, OrtShapeInferContext* context) noexcept {
  const OrtApi& api = *AsStopGradient(op).api;
  return CatchAll(api, [&]() -> OrtStatusPtr {
    OrtTensorTypeAndShapeInfo* info = nullptr;  // owned by the context
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.ShapeInferContext_GetInputTypeShape(context, 0, &info));
    size_t rank = 0;
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetDimensionsCount(info, &rank));
    if (rank == 0) return nullptr;
    std::vector<int64_t> dims(rank);
    std::vector<const char*> names(rank, nullptr);
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetDimensions(info, dims.data(), rank));
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetSymbolicDimensions(info, names.data(), rank));
    for (size_t i = 0; i < rank; ++i) {
      if (dims[i] < 0 && (names[i] == nullptr || names[i][0] == '\0')) return nullptr;
    }
    return api.ShapeInferContext_SetOutputTypeShape(context, 0, info);
  });
}

}  // namespace

void InitStopGradientOp(StopGradientOp& op, const OrtApi& api, uint32_t api_version, const char* provider,
                        ONNXTensorElementDataType element_type,
                        OrtStatusPtr(ORT_API_CALL* compute)(void* kernel, OrtKernelContext* context)) {
  OrtCustomOp& base = op;
  base = OrtCustomOp{};
  op.api = &api;
  op.provider = provider;
  op.element_type = element_type;

  // ORT reads only the fields that exist in `version`, so it must be the API version the
  // running ORT offers (negotiated in registry.cc), never above it.
  base.version = api_version;
  base.GetName = GetName;
  base.GetExecutionProviderType = GetProvider;
  base.GetInputType = GetElementType;
  base.GetOutputType = GetElementType;
  base.GetInputTypeCount = GetOne;
  base.GetOutputTypeCount = GetOne;
  base.GetInputCharacteristic = GetRequired;
  base.GetOutputCharacteristic = GetRequired;
  base.GetInputMemoryType = GetInputMemoryType;
  base.GetVariadicInputMinArity = GetVariadicMinArity;
  base.GetVariadicInputHomogeneity = GetVariadicHomogeneity;
  base.GetVariadicOutputMinArity = GetVariadicMinArity;
  base.GetVariadicOutputHomogeneity = GetVariadicHomogeneity;
  base.CreateKernelV2 = CreateKernel;
  base.KernelComputeV2 = compute;
  base.KernelDestroy = DestroyKernel;
  base.GetMayInplace = GetInputZeroOutputZero;
  base.ReleaseMayInplace = ReleaseIndexPair;
  base.InferOutputShapeFn = InferOutputShape;
  base.GetAliasMap = GetInputZeroOutputZero;
  base.ReleaseAliasMap = ReleaseIndexPair;
}

OrtStatusPtr MakeStatus(const OrtApi& api, OrtErrorCode code, const char* message) noexcept {
  return api.CreateStatus(code, message);
}

OrtStatusPtr DescribeTensor(const OrtApi& api, const OrtValue* value, TensorDesc* out) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatusPtr status = api.GetTensorElementType(info, &out->type);
  if (status == nullptr) status = api.GetDimensionsCount(info, &rank);
  if (status == nullptr) {
    out->dims.assign(rank, 0);
    status = api.GetDimensions(info, out->dims.data(), rank);
  }
  if (status == nullptr) status = api.GetTensorShapeElementCount(info, &out->count);
  api.ReleaseTensorTypeAndShapeInfo(info);
  return status;
}

OrtStatusPtr TensorBytes(const OrtApi& api, ONNXTensorElementDataType type, size_t count, size_t* out) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FN:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E4M3FNUZ:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT8E5M2FNUZ:
      *out = count;
      return nullptr;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      *out = count * 2;
      return nullptr;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      *out = count * 4;
      return nullptr;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64:
      *out = count * 8;
      return nullptr;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128:
      *out = count * 16;
      return nullptr;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT4:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT4:
      *out = (count + 1) / 2;  // two elements per byte
      return nullptr;
    default:
      return MakeStatus(api, ORT_NOT_IMPLEMENTED,
                        "onnx_stopgrad: StopGradient got a tensor element type it cannot copy");
  }
}

OrtStatusPtr GetIdentityIo(const OrtApi& api, OrtKernelContext* context, IdentityIo* io) {
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.KernelContext_GetInput(context, 0, &io->input));
  ONNX_STOPGRAD_RETURN_IF_ERROR(DescribeTensor(api, io->input, &io->desc));
  ONNX_STOPGRAD_RETURN_IF_ERROR(
      api.KernelContext_GetOutput(context, 0, io->desc.dims.data(), io->desc.dims.size(), &io->output));
  // The C API has no const accessor; the input is only read.
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetTensorMutableData(const_cast<OrtValue*>(io->input), &io->src));
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.GetTensorMutableData(io->output, &io->dst));
  return nullptr;
}

}  // namespace onnx_stopgrad
