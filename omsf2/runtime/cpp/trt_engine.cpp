// TensorRT inference for the C++ runtime (built by CMake only where TensorRT and CUDA are found).
//
// The same steps as omsf2.runtime.tensorrt_engine: check the engine manifest against this TensorRT
// and GPU (the rule of omsf2.runtime.engine_manifest.compatibility_error), load the plugin library
// the manifest names through IPluginRegistry::loadLibrary before deserialising, then run with the
// TensorRT 10/11 name-based API (setInputShape / setTensorAddress / enqueueV3) on a stream of its
// own. The engine's file was already hash-checked with the rest of the bundle.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "omsf2_engine.hpp"

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

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InferenceError("cannot read '" + path + "'");
  std::ostringstream o;
  o << f.rdbuf();
  return o.str();
}

int version3(const std::string& v) {  // "10.3.0.30" -> 100300, as getInferLibVersion() for TensorRT >= 10
  int a = 0, b = 0, c = 0;
  std::sscanf(v.c_str(), "%d.%d.%d", &a, &b, &c);
  return a * 10000 + b * 100 + c;
}

// omsf2.runtime.engine_manifest.compatibility_error, the same rule in C++.
void check_compatible(const Json& m, const std::string& engine_name) {
  const Json* build = m.get("build");
  const bool version_compat = build && build->get("version_compat") && build->get("version_compat")->boolean;
  const bool hardware_compat = build && build->get("hardware_compat") && build->get("hardware_compat")->boolean;
  const std::string built_trt = m.get("tensorrt_version") ? m.get("tensorrt_version")->str : "";
  const int built = version3(built_trt), running = getInferLibVersion();
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const Json* cc = m.get("compute_capability");
  const int built_cc = cc && cc->array.size() == 2 ? int(cc->array[0].number) * 10 + int(cc->array[1].number) : -1;
  const int run_cc = prop.major * 10 + prop.minor;
  std::string why;
  if (version_compat ? running < built : running != built) why += "TensorRT version differs; ";
  if (hardware_compat ? run_cc < 80 : run_cc != built_cc) why += "compute capability differs; ";
  if (!hardware_compat && run_cc == built_cc && m.get("gpu_name") && m.get("gpu_name")->str != prop.name)
    why += "GPU model differs; ";
  if (!why.empty())
    throw Unsupported("engine '" + engine_name + "' was built with TensorRT " + built_trt + " on " +
                      (m.get("gpu_name") ? m.get("gpu_name")->str : "?") + "; running TensorRT " +
                      std::to_string(running) + " on " + prop.name + ": " + why + "rebuild it here");
}

class TrtEngine : public Engine {
 public:
  TrtEngine(const BundleInfo& bundle, const std::string& engine_path) {
    const std::string name = engine_path.substr(engine_path.find_last_of('/') + 1);
    const Json manifest = parse_json(slurp(engine_path + ".json"));
    check_compatible(manifest, name);
    if (const Json* lib = manifest.get("plugin_library"); lib && lib->kind == Json::String) {
      const std::string lib_path = bundle.root + "/" + lib->str;
      if (!getPluginRegistry()->loadLibrary(lib_path.c_str()))
        throw InferenceError("TensorRT could not load plugin library '" + lib_path + "'");
    }
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw InferenceError("createInferRuntime failed");
    const Json* build = manifest.get("build");
    if (build && build->get("version_compat") && build->get("version_compat")->boolean)
      runtime_->setEngineHostCodeAllowed(true);  // trusted: its sha256 matched the bundle manifest
    const std::string data = slurp(engine_path);
    engine_.reset(runtime_->deserializeCudaEngine(data.data(), data.size()));
    if (!engine_) throw InferenceError("could not deserialize '" + name + "': " + logger_.last_error);
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw InferenceError("could not create an execution context: " + logger_.last_error);
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* t = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(t) != nvinfer1::DataType::kFLOAT)
        throw Unsupported(std::string("engine tensor '") + t + "' is not float32 (export with float I/O)");
      if (engine_->getTensorIOMode(t) == nvinfer1::TensorIOMode::kINPUT) input_ = t;
    }
    const Spec& s = bundle.spec;
    if (!context_->setInputShape(input_.c_str(), nvinfer1::Dims4{1, s.channels, s.height, s.width}))
      throw InferenceError("the engine's profile does not take a batch of 1 at the bundle's input size");
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    alloc(input_, static_cast<size_t>(s.channels) * s.height * s.width);
    for (const char* out : {"logits", "heatmap"}) {
      const nvinfer1::Dims d = context_->getTensorShape(out);
      if (d.nbDims < 2) throw Unsupported(std::string("engine has no output '") + out + "'");
      size_t n = 1;
      for (int k = 0; k < d.nbDims; ++k) n *= static_cast<size_t>(d.d[k]);
      alloc(out, n);
      if (std::string(out) == "heatmap") heat_h_ = d.d[d.nbDims - 2], heat_w_ = d.d[d.nbDims - 1];
    }
  }

  ~TrtEngine() override {
    for (auto& [n, b] : buffers_) cudaFree(b.first);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void run(const float* chw, std::vector<float>& logits, Plane& heatmap) override {
    auto& in = buffers_.at(input_);
    check(cudaMemcpyAsync(in.first, chw, in.second * sizeof(float), cudaMemcpyHostToDevice, stream_), "copy in");
    if (!context_->enqueueV3(stream_)) throw InferenceError("enqueueV3 failed: " + logger_.last_error);
    auto& lo = buffers_.at("logits");
    auto& hm = buffers_.at("heatmap");
    logits.resize(lo.second);
    heatmap.h = heat_h_;
    heatmap.w = heat_w_;
    heatmap.v.resize(hm.second);
    check(cudaMemcpyAsync(logits.data(), lo.first, lo.second * sizeof(float), cudaMemcpyDeviceToHost, stream_), "copy");
    check(cudaMemcpyAsync(heatmap.v.data(), hm.first, hm.second * sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "copy");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  void alloc(const std::string& name, size_t count) {
    void* p = nullptr;
    check(cudaMalloc(&p, count * sizeof(float)), "cudaMalloc");
    buffers_[name] = {p, count};
    if (!context_->setTensorAddress(name.c_str(), p)) throw InferenceError("setTensorAddress failed for " + name);
  }

  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::map<std::string, std::pair<void*, size_t>> buffers_;
  std::string input_;
  cudaStream_t stream_ = nullptr;
  int heat_h_ = 0, heat_w_ = 0;
};

}  // namespace

std::unique_ptr<Engine> open_engine(const BundleInfo& bundle) {
  for (const char* target : {"engine_int8", "engine_fp16", "engine_fp32"}) {
    auto it = bundle.artifacts.find(target);
    if (it != bundle.artifacts.end()) return std::make_unique<TrtEngine>(bundle, it->second);
  }
  return nullptr;  // a bundle without an engine: verify and preprocess only
}

bool has_tensorrt() { return true; }

}  // namespace omsf2
