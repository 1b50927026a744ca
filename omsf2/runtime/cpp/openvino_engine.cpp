// OpenVINO inference for the C++ runtime (built by CMake where find_package(OpenVINO) succeeds).
//
// Configured as the Python runtime's OpenVINO session is: the ONNX is read from the bytes whose
// sha256 was just checked (never from the path again), reshaped to a static [1, C, H, W] from the
// bundle's preprocessing size, and compiled for "CPU" with LATENCY, one stream, f32 inference
// precision (else OpenVINO may pick bf16/f16 on CPUs that have it) and the caller's thread count.
// The compiled model and one infer request live as long as the runtime: nothing is created per call,
// which is also why one runtime serves one thread at a time (omsf2_runtime.h).
#include <openvino/openvino.hpp>

#include <cstring>
#include <string>

#include "omsf2_engine.hpp"

namespace omsf2 {

namespace {

class OpenVinoEngine : public Engine {
 public:
  OpenVinoEngine(const BundleInfo& bundle, const std::string& artifact, int threads) : name_(artifact) {
    try {
      load(bundle, threads);
    } catch (const ov::Exception& e) {
      throw InferenceError("OpenVINO cannot run '" + name_ + "': " + one_line(e.what()));
    }
  }

  void run(const float* chw, std::vector<float>& logits, Plane& heatmap) override {
    try {
      ov::Tensor in = request_.get_input_tensor();
      std::memcpy(in.data<float>(), chw, in.get_byte_size());
      request_.infer();
      const ov::Tensor lo = request_.get_tensor(logits_);
      const ov::Tensor hm = request_.get_tensor(heatmap_);
      const ov::Shape hs = hm.get_shape();
      if (hs.size() < 2) throw InferenceError("the model's heat map has rank " + std::to_string(hs.size()));
      logits.assign(lo.data<const float>(), lo.data<const float>() + lo.get_size());
      heatmap.h = static_cast<int>(hs[hs.size() - 2]);
      heatmap.w = static_cast<int>(hs[hs.size() - 1]);
      heatmap.v.assign(hm.data<const float>(), hm.data<const float>() + hm.get_size());
    } catch (const ov::Exception& e) {
      throw InferenceError("OpenVINO failed on '" + name_ + "': " + one_line(e.what()));
    }
  }

 private:
  void load(const BundleInfo& bundle, int threads) {
    std::shared_ptr<ov::Model> model;
    {
      const std::string bytes = read_verified(bundle, name_);  // freed once the model is read
      model = core_.read_model(bytes, ov::Tensor());
    }
    if (model->inputs().size() != 1)
      throw InferenceError("'" + name_ + "' has " + std::to_string(model->inputs().size()) +
                           " inputs; omsf2 models have 1");
    const Spec& s = bundle.spec;
    model->reshape(ov::PartialShape{1, s.channels, s.height, s.width});
    ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
                      ov::num_streams(ov::streams::Num(1)), ov::hint::inference_precision(ov::element::f32)};
    if (threads > 0) config.emplace(ov::inference_num_threads(threads));
    compiled_ = core_.compile_model(model, "CPU", config);
    logits_ = compiled_.output(kLogitsName);
    heatmap_ = compiled_.output(kHeatmapName);
    if (compiled_.input().get_element_type() != ov::element::f32)
      throw InferenceError("'" + name_ + "' does not take float32 input (export with float I/O)");
    request_ = compiled_.create_infer_request();
  }

  std::string name_;
  ov::Core core_;
  ov::CompiledModel compiled_;
  ov::InferRequest request_;
  ov::Output<const ov::Node> logits_, heatmap_;
};

}  // namespace

bool has_openvino() { return true; }

std::unique_ptr<Engine> open_openvino(const BundleInfo& bundle, const std::string& artifact, int threads) {
  return std::make_unique<OpenVinoEngine>(bundle, artifact, threads);
}

}  // namespace omsf2
