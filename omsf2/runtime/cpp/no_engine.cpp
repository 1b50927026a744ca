// Stands in for the backends the library is built without: bundles still verify and images still
// preprocess, and asking for the missing backend is a clear Unsupported.
#include "omsf2_engine.hpp"

namespace omsf2 {

#ifndef OMSF2_WITH_OPENVINO
bool has_openvino() { return false; }
std::unique_ptr<Engine> open_openvino(const BundleInfo&, const std::string&, int) {
  throw Unsupported("this omsf2 runtime was built without OpenVINO");
}
#endif

#ifndef OMSF2_WITH_TENSORRT
bool has_tensorrt() { return false; }
std::unique_ptr<Engine> open_tensorrt(const BundleInfo&, const std::string&) {
  throw Unsupported("this omsf2 runtime was built without TensorRT");
}
#endif

}  // namespace omsf2
