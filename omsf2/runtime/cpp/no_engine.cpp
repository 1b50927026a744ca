// Built where TensorRT is not found: bundles verify and images preprocess, inference is unsupported.
#include "omsf2_engine.hpp"

namespace omsf2 {

std::unique_ptr<Engine> open_engine(const BundleInfo&) { return nullptr; }

bool has_tensorrt() { return false; }

}  // namespace omsf2
