// The library's one exported symbol: RegisterCustomOps, called by ONNX Runtime's
// SessionOptions.register_custom_ops_library. It negotiates the C API version with the
// running ORT and adds the onnx_stopgrad domain with the CPU (and, when built, CUDA) ops.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/stop_gradient_cpu.h"
#include "names.h"
#include "op_common.h"
#ifdef ONNX_STOPGRAD_WITH_CUDA
#include "cuda/stop_gradient_cuda.h"
#endif

namespace onnx_stopgrad {
namespace {

// All ops of one API version. ORT keeps pointers to them (and to the domains) for the
// lifetime of every session, so both live until the process exits.
struct OpSet {
  uint32_t api_version = 0;
  StopGradientOp cpu;
#ifdef ONNX_STOPGRAD_WITH_CUDA
  std::vector<StopGradientOp> cuda = std::vector<StopGradientOp>(kCudaElementTypes.size());
#endif
};

std::mutex registry_mutex;
std::vector<std::unique_ptr<OpSet>> op_sets;
std::vector<OrtCustomOpDomain*> domains;

const OpSet& OpsFor(const OrtApi& api, uint32_t api_version) {
  for (const auto& set : op_sets) {
    if (set->api_version == api_version) return *set;
  }
  auto set = std::make_unique<OpSet>();
  set->api_version = api_version;
  InitStopGradientCpuOp(set->cpu, api, api_version);
#ifdef ONNX_STOPGRAD_WITH_CUDA
  for (size_t i = 0; i < kCudaElementTypes.size(); ++i) {
    InitStopGradientCudaOp(set->cuda[i], api, api_version, kCudaElementTypes[i]);
  }
#endif
  op_sets.push_back(std::move(set));
  return *op_sets.back();
}

// Minor number of a version string such as "1.19.2" (ORT's API version), or 0.
uint32_t MinorVersion(const char* version) {
  if (version == nullptr) return 0;
  const char* dot = version;
  while (*dot != '\0' && *dot != '.') ++dot;
  return *dot == '.' ? static_cast<uint32_t>(std::strtoul(dot + 1, nullptr, 10)) : 0;
}

// The highest API version in [kMinOrtApiVersion, ORT_API_VERSION] the runtime offers.
// Asking from the runtime's own minor version first avoids ORT's stderr complaint
// about versions it lacks.
const OrtApi* NegotiateApi(const OrtApiBase& base, uint32_t* version) {
  uint32_t start = ORT_API_VERSION;
  const uint32_t runtime_minor = MinorVersion(base.GetVersionString());
  if (runtime_minor >= kMinOrtApiVersion && runtime_minor < start) start = runtime_minor;
  for (uint32_t v = start; v >= kMinOrtApiVersion; --v) {
    if (const OrtApi* api = base.GetApi(v)) {
      *version = v;
      return api;
    }
  }
  return nullptr;
}

OrtStatusPtr TooOldRuntime(const OrtApiBase& base) {
  const OrtApi* api_v1 = base.GetApi(1);
  if (api_v1 == nullptr) return nullptr;  // cannot even report; ORT offers every version >= 1
  uint32_t offered = 0;
  for (uint32_t v = kMinOrtApiVersion - 1; v >= 1 && offered == 0; --v) {
    if (base.GetApi(v) != nullptr) offered = v;
  }
  const char* runtime = base.GetVersionString();
  char message[256];
  std::snprintf(message, sizeof(message),
                "onnx_stopgrad needs ONNX Runtime >= 1.%u (API %u); this runtime offers API %u "
                "(ONNX Runtime %s): upgrade onnxruntime",
                kMinOrtApiVersion, kMinOrtApiVersion, offered, runtime ? runtime : "unknown");
  return api_v1->CreateStatus(ORT_FAIL, message);
}

OrtStatusPtr Register(OrtSessionOptions* options, const OrtApi& api, uint32_t api_version) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  const OpSet& ops = OpsFor(api, api_version);
  OrtCustomOpDomain* domain = nullptr;
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.CreateCustomOpDomain(kDomain, &domain));
  domains.push_back(domain);
  // The CPU op goes first: ORT builds the schema from the first op of a name.
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.CustomOpDomain_Add(domain, &ops.cpu));
#ifdef ONNX_STOPGRAD_WITH_CUDA
  for (const StopGradientOp& op : ops.cuda) {
    ONNX_STOPGRAD_RETURN_IF_ERROR(api.CustomOpDomain_Add(domain, &op));
  }
#endif
  return api.AddCustomOpDomain(options, domain);
}

}  // namespace
}  // namespace onnx_stopgrad

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) noexcept {
  using namespace onnx_stopgrad;
  if (api_base == nullptr) return nullptr;  // no API table: nothing can be registered or reported
  uint32_t api_version = 0;
  const OrtApi* api = NegotiateApi(*api_base, &api_version);
  if (api == nullptr) return TooOldRuntime(*api_base);
  return CatchAll(*api, [&]() { return Register(options, *api, api_version); });
}
