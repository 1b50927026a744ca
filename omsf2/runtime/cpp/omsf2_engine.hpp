// The inference half of the C++ runtime: one engine per runtime (TensorRT in trt_engine.cpp;
// no_engine.cpp where the library is built without TensorRT).
#ifndef OMSF2_ENGINE_HPP
#define OMSF2_ENGINE_HPP

#include <memory>
#include <stdexcept>
#include <vector>

#include "omsf2_bundle.hpp"

namespace omsf2 {

struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InferenceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Engine {
 public:
  virtual ~Engine() = default;
  // One preprocessed image (C, H, W) in; logits (K) and the heat map over the model input out.
  virtual void run(const float* chw, std::vector<float>& logits, Plane& heatmap) = 0;
};

// Open the bundle's engine (engine_int8, engine_fp16 or engine_fp32, in that order) with the
// plugin library loaded first; throws Unsupported / InferenceError.
std::unique_ptr<Engine> open_engine(const BundleInfo& bundle);
bool has_tensorrt();

}  // namespace omsf2

#endif  // OMSF2_ENGINE_HPP
