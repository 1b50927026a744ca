// The inference half of the C++ runtime: one engine per runtime, chosen by the rules' backend table
// (engine.cpp): OpenVINO on the CPU (openvino_engine.cpp), TensorRT on a GPU (trt_engine.cpp);
// no_engine.cpp stands in for whichever of the two the library was built without.
#ifndef OMSF2_ENGINE_HPP
#define OMSF2_ENGINE_HPP

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "omsf2_bundle.hpp"

namespace omsf2 {

// The backend cannot run here (not built in, no file for it in the bundle, another GPU or TensorRT).
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The backend failed to load or run the model, or the model produced what it must not.
struct InferenceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The model's tensors, as the export names them (omsf2.runtime.sessions INPUT_NAME / OUTPUT_NAMES).
inline constexpr const char* kInputName = "image";
inline constexpr const char* kLogitsName = "logits";
inline constexpr const char* kHeatmapName = "heatmap";

class Engine {
 public:
  virtual ~Engine() = default;
  // One preprocessed image (C, H, W) in; logits (K) and the heat map over the model input out.
  virtual void run(const float* chw, std::vector<float>& logits, Plane& heatmap) = 0;
};

struct OpenedEngine {
  std::unique_ptr<Engine> engine;  // null: built with no backend at all (verify and preprocess only)
  std::string backend;             // the rules' name of the backend that runs
};

// The engine for `backend` ("auto" or a name of rules::kImplemented) on the bundle's file for it;
// "auto" takes the first of rules::kAutoOrder that this library implements and that opens here.
// Throws std::invalid_argument (unknown name), Unsupported, InferenceError or BundleError.
OpenedEngine open_engine(const BundleInfo& bundle, const std::string& backend, int threads);

bool has_openvino();
bool has_tensorrt();
// Each opens the bundle's file `artifact` (a name listed in manifest.json) for its backend.
std::unique_ptr<Engine> open_openvino(const BundleInfo& bundle, const std::string& artifact, int threads);
std::unique_ptr<Engine> open_tensorrt(const BundleInfo& bundle, const std::string& artifact);

// A library's multi-line message as one line of at most `limit` characters.
std::string one_line(const std::string& text, size_t limit = 400);

}  // namespace omsf2

#endif  // OMSF2_ENGINE_HPP
