// The library's one exported symbol: RegisterCustomOps, called by ONNX Runtime's
// SessionOptions.register_custom_ops_library. It negotiates the C API version with the
// running ORT and adds the onnx_stopgrad domain with the CPU op, and the CUDA ops where
// the CUDA driver loads: one domain per process and API, shared by every SessionOptions.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/stop_gradient_cpu.h"
#include "names.h"
#include "op_common.h"
#include "platform/export.h"
#include "platform/shared_library.h"
#ifdef ONNX_STOPGRAD_WITH_CUDA
#include "cuda/stop_gradient_cuda.h"
#endif

namespace onnx_stopgrad {
namespace {

// Everything one ORT C API (one runtime, one negotiated version) gets: the ops and the
// domain holding them. Built on the first registration and added to every SessionOptions
// after it (ORT only reads a domain and does not own it), so registering the library for
// many sessions costs nothing more.
struct OpSet {
  const OrtApi* api = nullptr;
  uint32_t api_version = 0;
  StopGradientOp cpu;
#ifdef ONNX_STOPGRAD_WITH_CUDA
  std::vector<StopGradientOp> cuda;  // empty where the CUDA driver does not load
#endif
  OrtCustomOpDomain* domain = nullptr;
};

struct Registry {
  std::mutex mutex;
  std::vector<std::unique_ptr<OpSet>> op_sets;
};

// Never destroyed, on purpose. The library stays loaded until the process exits, even
// after ORT dlcloses it (`-z nodelete` on Linux, PinThisLibrary elsewhere; ORT unloads it
// when the last SessionOptions and session that registered it are gone, and a reload
// would run the static C++ runtime's start-up again and keep its allocations). Sessions keep
// pointers to the ops and may be destroyed during exit, after static destructors have
// run, so nothing here may be freed: the operating system reclaims it.
Registry& TheRegistry() {
  static Registry* const registry = new Registry();
  return *registry;
}

OrtStatusPtr BuildOpSet(const OrtApi& api, uint32_t api_version, std::unique_ptr<OpSet>* out) {
  auto set = std::make_unique<OpSet>();
  set->api = &api;
  set->api_version = api_version;
  InitStopGradientCpuOp(set->cpu, api, api_version);
#ifdef ONNX_STOPGRAD_WITH_CUDA
  if (CudaOpsAvailable()) {
    set->cuda.resize(kCudaElementTypes.size());
    for (size_t i = 0; i < kCudaElementTypes.size(); ++i) {
      InitStopGradientCudaOp(set->cuda[i], api, api_version, kCudaElementTypes[i]);
    }
  }
#endif
  ONNX_STOPGRAD_RETURN_IF_ERROR(api.CreateCustomOpDomain(kDomain, &set->domain));
  // The CPU op goes first: ORT builds the schema from the first op of a name.
  OrtStatusPtr status = api.CustomOpDomain_Add(set->domain, &set->cpu);
#ifdef ONNX_STOPGRAD_WITH_CUDA
  for (size_t i = 0; status == nullptr && i < set->cuda.size(); ++i) {
    status = api.CustomOpDomain_Add(set->domain, &set->cuda[i]);
  }
#endif
  if (status != nullptr) {
    api.ReleaseCustomOpDomain(set->domain);  // no SessionOptions has seen it yet
    return status;
  }
  *out = std::move(set);
  return nullptr;
}

// The domain for `api`, built on first use; thread-safe.
OrtStatusPtr DomainFor(const OrtApi& api, uint32_t api_version, OrtCustomOpDomain** domain) {
  Registry& registry = TheRegistry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  for (const auto& set : registry.op_sets) {
    if (set->api == &api && set->api_version == api_version) {
      *domain = set->domain;
      return nullptr;
    }
  }
  registry.op_sets.reserve(registry.op_sets.size() + 1);  // the push_back below cannot throw
  std::unique_ptr<OpSet> set;
  ONNX_STOPGRAD_RETURN_IF_ERROR(BuildOpSet(api, api_version, &set));
  registry.op_sets.push_back(std::move(set));
  *domain = registry.op_sets.back()->domain;
  return nullptr;
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
  OrtCustomOpDomain* domain = nullptr;
  ONNX_STOPGRAD_RETURN_IF_ERROR(DomainFor(api, api_version, &domain));
  return api.AddCustomOpDomain(options, domain);
}

}  // namespace
}  // namespace onnx_stopgrad

extern "C" ONNX_STOPGRAD_EXPORT OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) noexcept {
  using namespace onnx_stopgrad;
  if (api_base == nullptr) return nullptr;  // no API table: nothing can be registered or reported
  PinThisLibrary();  // the ops outlive every SessionOptions (see TheRegistry)
  uint32_t api_version = 0;
  const OrtApi* api = NegotiateApi(*api_base, &api_version);
  if (api == nullptr) return TooOldRuntime(*api_base);
  return CatchAll(*api, [&]() { return Register(options, *api, api_version); });
}
