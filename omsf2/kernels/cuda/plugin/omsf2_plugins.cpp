// TensorRT IPluginV3 plugins for the omsf2 fused neck ops, written against TensorRT 10.3 (JetPack 6).
//
//   omsf2::MultiscalePool v1   fields: windows (kINT32[]; default 5,9,13), mode (kINT32; 0 = max, 1 = avg)
//                              in: x (N, C, H, W)   out: (N, C * (1 + len(windows)), H, W)
//   omsf2::ScaleFuse v1        no fields
//                              in: l (N, C, H, W), a (N, 1, H, W), l_up (N, C, h, w), a_up (N, 1, h, w)
//                              out: (N, C, H, W) = (1 + a) * l + a * up(a_up) * up(l_up)
//
// Linear (NCHW) fp32 / fp16 / bf16, all I/O of one type (strongly typed engines pick it from the network).
// enqueue() calls the same launchers as the torch extension (../csrc/*.cu): one kernel source for both.
//
// Loading. TensorRT 10's IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, --setPluginsToSerialize,
// Python registry.load_library) looks up the C exports getCreators / setLoggerFinder, and fails if a creator
// is already registered. trtexec --staticPlugins and a bare dlopen / ctypes.CDLL instead rely on registration
// by a static initializer. The two are mutually exclusive, so CMake builds this file twice:
//   libomsf2_plugins.so         exports getCreators + setLoggerFinder (no static registration)
//   libomsf2_plugins_autoreg.so OMSF2_PLUGIN_SELF_REGISTER: registers both creators when loaded
// ONNX: a node with op_type "MultiscalePool"/"ScaleFuse" and attributes plugin_namespace="omsf2",
// plugin_version="1" is imported by the ONNX parser's plugin fallback with these creators.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "../csrc/omsf2_kernels.cuh"

namespace omsf2 {
namespace plugin {
namespace {

using namespace nvinfer1;  // NOLINT(google-build-using-namespace): keeps the override signatures readable

constexpr char const* kNamespace = "omsf2";
constexpr char const* kVersion = "1";
constexpr char const* kMultiscalePoolName = "MultiscalePool";
constexpr char const* kScaleFuseName = "ScaleFuse";

// --- logging through TensorRT's logger (set by setLoggerFinder when loaded by loadLibrary) -------------------

std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

void logError(std::string const& msg) noexcept {
  ILoggerFinder* finder = gLoggerFinder.load();
  ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr) {
    logger->log(ILogger::Severity::kERROR, ("[omsf2 plugin] " + msg).c_str());
  }
}

bool toKernelType(DataType t, DType* out) noexcept {
  switch (t) {
    case DataType::kFLOAT:
      *out = DType::kFloat32;
      return true;
    case DataType::kHALF:
      *out = DType::kFloat16;
      return true;
    case DataType::kBF16:
      *out = DType::kBFloat16;
      return true;
    default:
      return false;
  }
}

bool isSupportedType(DataType t) noexcept {
  DType unused{};
  return toKernelType(t, &unused);
}

// Linear layout and a supported type at `pos`, and the same type as position 0 (all I/O share one dtype).
bool sameLinearSupported(int32_t pos, DynamicPluginTensorDesc const* inOut) noexcept {
  PluginTensorDesc const& d = inOut[pos].desc;
  if (d.format != TensorFormat::kLINEAR || !isSupportedType(d.type)) return false;
  return pos == 0 || d.type == inOut[0].desc.type;
}

// Shared plumbing of both plugins: the capability interfaces and name/version/namespace.
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
 public:
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE:
        return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD:
        return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME:
        return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }

  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
  int32_t getNbOutputs() const noexcept override { return 1; }

  size_t getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
                          DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override {
    return 0;
  }

  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override {
    if (nbOutputs != 1 || nbInputs < 1 || !isSupportedType(inputTypes[0])) return -1;
    outputTypes[0] = inputTypes[0];
    return 0;
  }

  IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }
};

// --- MultiscalePool ----------------------------------------------------------------------------------------

class MultiscalePoolPlugin final : public PluginBase {
 public:
  MultiscalePoolPlugin(std::vector<int32_t> windows, int32_t mode) : mWindows(std::move(windows)), mMode(mode) {
    initFields();
  }
  MultiscalePoolPlugin(MultiscalePoolPlugin const& other) : PluginBase(), mWindows(other.mWindows), mMode(other.mMode) {
    initFields();  // the copy's fields must point at its own storage
  }
  MultiscalePoolPlugin& operator=(MultiscalePoolPlugin const&) = delete;

  // Returns "" when valid, else the reason; shared by the creator and deserialization.
  static std::string validate(std::vector<int32_t> const& windows, int32_t mode) {
    if (windows.empty() || static_cast<int>(windows.size()) > kMaxWindows) {
      return "MultiscalePool: windows must hold 1 to " + std::to_string(kMaxWindows) + " sizes, got " +
             std::to_string(windows.size());
    }
    for (int32_t k : windows) {
      if (k < 1 || k % 2 == 0) return "MultiscalePool: windows must be odd positive, got " + std::to_string(k);
    }
    if (mode != 0 && mode != 1) return "MultiscalePool: mode must be 0 (max) or 1 (avg), got " + std::to_string(mode);
    return "";
  }

  IPluginV3* clone() noexcept override {
    try {
      return new MultiscalePoolPlugin(*this);
    } catch (std::exception const& e) {
      logError(std::string("MultiscalePool clone failed: ") + e.what());
    }
    return nullptr;
  }

  AsciiChar const* getPluginName() const noexcept override { return kMultiscalePoolName; }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || in[0].desc.dims.nbDims != 4) {
      logError("MultiscalePool expects one 4-D (N, C, H, W) input and one output");
      return -1;
    }
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1) return false;
    return sameLinearSupported(pos, inOut);
  }

  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                          int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                          IExprBuilder& exprBuilder) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
    outputs[0] = inputs[0];
    // Channels: C * (1 + len(windows)), symbolic so dynamic C stays dynamic.
    IDimensionExpr const* blocks = exprBuilder.constant(1 + static_cast<int64_t>(mWindows.size()));
    outputs[0].d[1] = exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[1], *blocks);
    return outputs[0].d[1] != nullptr ? 0 : -1;
  }

  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || in[0].dims.nbDims != 4 || out[0].dims.nbDims != 4) return -1;
    return 0;
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/, void const* const* inputs,
                  void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override {
    DType dtype{};
    if (!toKernelType(inputDesc[0].type, &dtype)) {
      logError("MultiscalePool: unsupported data type");
      return -1;
    }
    Dims const& d = inputDesc[0].dims;
    cudaError_t const err =
        launch_multiscale_pool(dtype, inputs[0], outputs[0], d.d[0], d.d[1], d.d[2], d.d[3], mWindows.data(),
                               static_cast<int>(mWindows.size()), static_cast<PoolMode>(mMode), stream);
    if (err != cudaSuccess) {
      logError(std::string("MultiscalePool kernel failed: ") + cudaGetErrorString(err));
      return -1;
    }
    return 0;
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFieldCollection; }

 private:
  void initFields() {
    mFields.clear();
    mFields.emplace_back("windows", mWindows.data(), PluginFieldType::kINT32, static_cast<int32_t>(mWindows.size()));
    mFields.emplace_back("mode", &mMode, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
  }

  std::vector<int32_t> mWindows;
  int32_t mMode;
  std::vector<PluginField> mFields;
  PluginFieldCollection mFieldCollection{};
};

// --- ScaleFuse ---------------------------------------------------------------------------------------------

class ScaleFusePlugin final : public PluginBase {
 public:
  ScaleFusePlugin() { mFieldCollection = PluginFieldCollection{0, nullptr}; }
  ScaleFusePlugin(ScaleFusePlugin const&) = default;
  ScaleFusePlugin& operator=(ScaleFusePlugin const&) = delete;

  IPluginV3* clone() noexcept override {
    try {
      return new ScaleFusePlugin(*this);
    } catch (std::exception const& e) {
      logError(std::string("ScaleFuse clone failed: ") + e.what());
    }
    return nullptr;
  }

  AsciiChar const* getPluginName() const noexcept override { return kScaleFuseName; }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
    if (nbInputs != 4 || nbOutputs != 1) {
      logError("ScaleFuse expects 4 inputs (l, a, l_up, a_up) and 1 output");
      return -1;
    }
    for (int32_t i = 0; i < 4; ++i) {
      if (in[i].desc.dims.nbDims != 4) {
        logError("ScaleFuse: every input must be 4-D (N, C, H, W)");
        return -1;
      }
    }
    // Channel counts known at build time must agree (-1 marks a dynamic dimension).
    int64_t const c = in[0].desc.dims.d[1];
    int64_t const cUp = in[2].desc.dims.d[1];
    if ((in[1].desc.dims.d[1] != -1 && in[1].desc.dims.d[1] != 1) ||
        (in[3].desc.dims.d[1] != -1 && in[3].desc.dims.d[1] != 1) || (c != -1 && cUp != -1 && c != cUp)) {
      logError("ScaleFuse: a and a_up need 1 channel, l and l_up the same channel count");
      return -1;
    }
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override {
    if (nbInputs != 4 || nbOutputs != 1 || pos < 0 || pos > 4) return false;
    return sameLinearSupported(pos, inOut);
  }

  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                          int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                          IExprBuilder& /*exprBuilder*/) noexcept override {
    if (nbInputs != 4 || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
    outputs[0] = inputs[0];  // same shape as l
    return 0;
  }

  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/,
                        int32_t nbOutputs) noexcept override {
    if (nbInputs != 4 || nbOutputs != 1) return -1;
    Dims const& l = in[0].dims;
    Dims const& a = in[1].dims;
    Dims const& lUp = in[2].dims;
    Dims const& aUp = in[3].dims;
    bool const ok = l.nbDims == 4 && a.nbDims == 4 && lUp.nbDims == 4 && aUp.nbDims == 4 && a.d[0] == l.d[0] &&
                    a.d[1] == 1 && a.d[2] == l.d[2] && a.d[3] == l.d[3] && lUp.d[0] == l.d[0] &&
                    lUp.d[1] == l.d[1] && aUp.d[0] == l.d[0] && aUp.d[1] == 1 && aUp.d[2] == lUp.d[2] &&
                    aUp.d[3] == lUp.d[3];
    if (!ok) {
      logError("ScaleFuse: shapes must be l (N,C,H,W), a (N,1,H,W), l_up (N,C,h,w), a_up (N,1,h,w)");
      return -1;
    }
    return 0;
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/, void const* const* inputs,
                  void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override {
    DType dtype{};
    if (!toKernelType(inputDesc[0].type, &dtype)) {
      logError("ScaleFuse: unsupported data type");
      return -1;
    }
    Dims const& l = inputDesc[0].dims;
    Dims const& lUp = inputDesc[2].dims;
    cudaError_t const err = launch_scale_fuse(dtype, inputs[0], inputs[1], inputs[2], inputs[3], outputs[0], l.d[0],
                                              l.d[1], l.d[2], l.d[3], lUp.d[2], lUp.d[3], stream);
    if (err != cudaSuccess) {
      logError(std::string("ScaleFuse kernel failed: ") + cudaGetErrorString(err));
      return -1;
    }
    return 0;
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFieldCollection; }

 private:
  PluginFieldCollection mFieldCollection{};
};

// --- creators ------------------------------------------------------------------------------------------------

class MultiscalePoolCreator final : public IPluginCreatorV3One {
 public:
  MultiscalePoolCreator() {
    // Variable-length kINT32 array (length 0 here = "any"), and a scalar kINT32.
    mFields.emplace_back("windows", nullptr, PluginFieldType::kINT32, 0);
    mFields.emplace_back("mode", nullptr, PluginFieldType::kINT32, 1);
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
  }

  AsciiChar const* getPluginName() const noexcept override { return kMultiscalePoolName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
  PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }

  IPluginV3* createPlugin(AsciiChar const* /*name*/, PluginFieldCollection const* fc,
                          TensorRTPhase /*phase*/) noexcept override {
    try {
      std::vector<int32_t> windows{5, 9, 13};
      int32_t mode = 0;
      for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr) continue;
        bool const isInt = f.type == PluginFieldType::kINT32 && f.data != nullptr;
        if (std::strcmp(f.name, "windows") == 0) {
          if (!isInt) {
            logError("MultiscalePool: field 'windows' must be a kINT32 array");
            return nullptr;
          }
          auto const* p = static_cast<int32_t const*>(f.data);
          windows.assign(p, p + f.length);
        } else if (std::strcmp(f.name, "mode") == 0) {
          if (!isInt || f.length != 1) {
            logError("MultiscalePool: field 'mode' must be one kINT32 (0 = max, 1 = avg)");
            return nullptr;
          }
          mode = *static_cast<int32_t const*>(f.data);
        }
      }
      std::string const err = MultiscalePoolPlugin::validate(windows, mode);
      if (!err.empty()) {
        logError(err);
        return nullptr;
      }
      return new MultiscalePoolPlugin(std::move(windows), mode);
    } catch (std::exception const& e) {
      logError(std::string("MultiscalePool createPlugin failed: ") + e.what());
    }
    return nullptr;
  }

 private:
  std::vector<PluginField> mFields;
  PluginFieldCollection mCollection{};
};

class ScaleFuseCreator final : public IPluginCreatorV3One {
 public:
  AsciiChar const* getPluginName() const noexcept override { return kScaleFuseName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
  PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }

  IPluginV3* createPlugin(AsciiChar const* /*name*/, PluginFieldCollection const* /*fc*/,
                          TensorRTPhase /*phase*/) noexcept override {
    try {
      return new ScaleFusePlugin();
    } catch (std::exception const& e) {
      logError(std::string("ScaleFuse createPlugin failed: ") + e.what());
    }
    return nullptr;
  }

 private:
  PluginFieldCollection mCollection{0, nullptr};
};

// Function-local statics: constructed on first use, valid for the library's lifetime.
IPluginCreatorInterface* const* creatorList(int32_t& count) noexcept {
  static MultiscalePoolCreator sMultiscalePool;
  static ScaleFuseCreator sScaleFuse;
  static IPluginCreatorInterface* const sList[] = {&sMultiscalePool, &sScaleFuse};
  count = static_cast<int32_t>(sizeof(sList) / sizeof(sList[0]));
  return sList;
}

#if defined(OMSF2_PLUGIN_SELF_REGISTER)
// Registration when the library is loaded (trtexec --staticPlugins, dlopen, ctypes.CDLL). Registers under the
// creators' own namespace, so lookups by ("MultiscalePool", "1", "omsf2") succeed.
struct SelfRegistrar {
  SelfRegistrar() {
    int32_t n = 0;
    IPluginCreatorInterface* const* list = creatorList(n);
    IPluginRegistry* registry = getPluginRegistry();
    for (int32_t i = 0; registry != nullptr && i < n; ++i) {
      registry->registerCreator(*list[i], kNamespace);
    }
  }
};
SelfRegistrar const gSelfRegistrar{};
#endif

}  // namespace
}  // namespace plugin
}  // namespace omsf2

// C entry points looked up by IPluginRegistry::loadLibrary (TensorRT >= 10.0). The self-registering build
// does not export getCreators: loadLibrary would find its creators already registered and fail.
//
// Exported with an attribute of their own: TensorRT's TENSORRTAPI means default visibility only inside TensorRT's
// build (TENSORRT_BUILD_LIB) and nothing here, and CMake builds this library with hidden visibility, so under
// TENSORRTAPI loadLibrary would find neither symbol.
#if defined(_WIN32)
#define OMSF2_PLUGIN_EXPORT __declspec(dllexport)
#else
#define OMSF2_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

extern "C" OMSF2_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  omsf2::plugin::gLoggerFinder.store(finder);
}

#if !defined(OMSF2_PLUGIN_SELF_REGISTER)
extern "C" OMSF2_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  return omsf2::plugin::creatorList(nbCreators);
}
#endif
