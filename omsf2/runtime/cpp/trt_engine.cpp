// TensorRT inference for the C++ runtime (built by CMake only where TensorRT and CUDA are found).
//
// The same steps as omsf2.runtime.tensorrt_engine.load_engine: the engine manifest (a bundle file,
// read once and hash-checked) is judged by the shared compatibility rule against this TensorRT and
// GPU before TensorRT sees the engine; the plugin library is the rules' file name inside the bundle
// folder, a plain file whose sha256 must match the manifest's before loadLibrary; the engine's bytes
// are read once, checked against both manifests and handed as they are to deserializeCudaEngine.
// Runs with the TensorRT 10/11 name-based API (setInputShape / setTensorAddress / enqueueV3) on a
// stream of its own. Every TensorRT object, CUDA buffer, the stream and the plugin library are owned
// by RAII members, declared in the order that tears them down safely.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "omsf2_engine.hpp"
#include "omsf2_engine_manifest.hpp"
#include "omsf2_rules.hpp"

namespace omsf2 {

namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last_error = msg;
  }
  std::string last_error;
};

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw InferenceError(std::string(what) + ": " + cudaGetErrorString(e));
}

struct CudaFree {
  void operator()(void* p) const noexcept { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, CudaFree>;

struct StreamDestroy {
  void operator()(cudaStream_t s) const noexcept {
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
};
using Stream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDestroy>;

// A plugin library loaded into TensorRT's registry, deregistered when the engine is gone.
class PluginLibrary {
 public:
  PluginLibrary() = default;
  explicit PluginLibrary(const std::string& path) : handle_(getPluginRegistry()->loadLibrary(path.c_str())) {
    if (!handle_) throw InferenceError("TensorRT could not load plugin library '" + path + "'");
  }
  PluginLibrary(const PluginLibrary&) = delete;
  PluginLibrary& operator=(const PluginLibrary&) = delete;
  PluginLibrary& operator=(PluginLibrary&& other) noexcept {
    std::swap(handle_, other.handle_);
    return *this;
  }
  ~PluginLibrary() {
    if (handle_) getPluginRegistry()->deregisterLibrary(handle_);
  }

 private:
  nvinfer1::IPluginRegistry::PluginLibraryHandle handle_ = nullptr;
};

// "10.3.0": getInferLibVersion() is (major * 100 + minor) * 100 + patch from TensorRT 10 on.
std::string running_trt_version() {
  const int v = getInferLibVersion();
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

void check_compatible(const EngineManifest& m) {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  const std::string why = compatibility_error(m, running_trt_version(), prop.name, {prop.major, prop.minor});
  if (!why.empty()) throw Unsupported(why);
}

// The rules' plugin library, inside the bundle, listed and hashed there and matching the engine manifest.
std::string verified_plugin(const BundleInfo& bundle, const EngineManifest& m, const std::string& engine_name) {
  if (m.plugin_library != rules::kPluginLibrary)
    throw Unsupported("engine '" + engine_name + "' names plugin library '" + m.plugin_library + "'; bundles carry '" +
                      rules::kPluginLibrary + "'");
  if (!bundle.files.count(rules::kPluginLibrary))
    throw BundleError("engine '" + engine_name + "' needs plugin library '" + m.plugin_library +
                      "', which the bundle does not hold");
  if (sha256_bytes(read_verified(bundle, rules::kPluginLibrary)) != m.plugin_library_sha256)
    throw BundleError("plugin library '" + m.plugin_library + "' is not the one engine '" + engine_name +
                      "' was built with (sha256 differs)");
  // loadLibrary takes a path, not bytes: between this hash and the load, the file is guarded only by
  // who may write to the bundle folder (a deployment keeps it read-only).
  return (std::filesystem::path(bundle.root) / rules::kPluginLibrary).string();
}

class TrtEngine : public Engine {
 public:
  TrtEngine(const BundleInfo& bundle, const std::string& artifact) {
    const EngineManifest m = read_engine_manifest(bundle, artifact);
    check_compatible(m);
    const std::string engine = read_verified(bundle, artifact);
    if (sha256_bytes(engine) != m.engine_sha256)
      throw BundleError("engine '" + artifact +
                        "' does not match its manifest (sha256 differs); rebuild or restore it");
    if (!m.plugin_library.empty()) plugin_ = PluginLibrary(verified_plugin(bundle, m, artifact));
    deserialize(engine, m, artifact);
    bind(bundle.spec);
  }

  void run(const float* chw, std::vector<float>& logits, Plane& heatmap) override {
    auto& in = buffers_.at(input_);
    check(cudaMemcpyAsync(in.first.get(), chw, in.second * sizeof(float), cudaMemcpyHostToDevice, stream_.get()),
          "copy in");
    if (!context_->enqueueV3(stream_.get())) throw InferenceError("enqueueV3 failed: " + logger_.last_error);
    auto& lo = buffers_.at(kLogitsName);
    auto& hm = buffers_.at(kHeatmapName);
    logits.resize(lo.second);
    heatmap.h = heat_h_, heatmap.w = heat_w_;
    heatmap.v.resize(hm.second);
    check(cudaMemcpyAsync(logits.data(), lo.first.get(), lo.second * sizeof(float), cudaMemcpyDeviceToHost,
                          stream_.get()),
          "copy out");
    check(cudaMemcpyAsync(heatmap.v.data(), hm.first.get(), hm.second * sizeof(float), cudaMemcpyDeviceToHost,
                          stream_.get()),
          "copy out");
    check(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize");
  }

 private:
  static EngineManifest read_engine_manifest(const BundleInfo& bundle, const std::string& artifact) {
    try {
      return parse_engine_manifest(read_verified(bundle, artifact + ".json"));
    } catch (const std::invalid_argument& e) {
      throw BundleError("engine manifest '" + artifact + ".json': " + e.what());
    }
  }

  void deserialize(const std::string& engine, const EngineManifest& m, const std::string& name) {
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw InferenceError("createInferRuntime failed");
    // A version-compatible plan carries host code TensorRT runs only when told it is trusted; it
    // is: its bytes matched the bundle manifest and the engine manifest.
    if (m.version_compat) runtime_->setEngineHostCodeAllowed(true);
    engine_.reset(runtime_->deserializeCudaEngine(engine.data(), engine.size()));
    if (!engine_)
      throw InferenceError("TensorRT " + running_trt_version() + " could not deserialize '" + name +
                           "': " + one_line(logger_.last_error));
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw InferenceError("could not create an execution context: " + logger_.last_error);
  }

  void bind(const Spec& s) {
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* t = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(t) != nvinfer1::DataType::kFLOAT)
        throw Unsupported(std::string("engine tensor '") + t + "' is not float32 (export with float I/O)");
      if (engine_->getTensorIOMode(t) == nvinfer1::TensorIOMode::kINPUT) input_ = t;
    }
    if (!context_->setInputShape(input_.c_str(), nvinfer1::Dims4{1, s.channels, s.height, s.width}))
      throw InferenceError("the engine's profile does not take a batch of 1 at the bundle's input size");
    cudaStream_t stream = nullptr;
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    stream_.reset(stream);
    alloc(input_, static_cast<size_t>(s.channels) * s.height * s.width);
    for (const char* out : {kLogitsName, kHeatmapName}) {
      const nvinfer1::Dims d = context_->getTensorShape(out);
      if (d.nbDims < 2) throw Unsupported(std::string("engine has no output '") + out + "'");
      size_t n = 1;
      for (int k = 0; k < d.nbDims; ++k) n *= static_cast<size_t>(d.d[k]);
      alloc(out, n);
      if (std::string(out) == kHeatmapName) heat_h_ = int(d.d[d.nbDims - 2]), heat_w_ = int(d.d[d.nbDims - 1]);
    }
  }

  void alloc(const std::string& name, size_t count) {
    void* p = nullptr;
    check(cudaMalloc(&p, count * sizeof(float)), "cudaMalloc");
    buffers_[name] = {DeviceBuffer(p), count};
    if (!context_->setTensorAddress(name.c_str(), p)) throw InferenceError("setTensorAddress failed for " + name);
  }

  // Destroyed bottom to top: buffers and stream, then context, engine, runtime, and the plugin
  // library only after everything that may call into it; the logger outlives the runtime.
  Logger logger_;
  PluginLibrary plugin_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  Stream stream_;
  std::map<std::string, std::pair<DeviceBuffer, size_t>> buffers_;
  std::string input_;
  int heat_h_ = 0, heat_w_ = 0;
};

}  // namespace

bool has_tensorrt() { return true; }

std::unique_ptr<Engine> open_tensorrt(const BundleInfo& bundle, const std::string& artifact) {
  return std::make_unique<TrtEngine>(bundle, artifact);
}

}  // namespace omsf2
