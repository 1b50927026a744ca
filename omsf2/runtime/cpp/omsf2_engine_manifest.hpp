// The JSON manifest beside every TensorRT engine, and the rule that decides where it may load
// (omsf2.runtime.engine_manifest; the rule itself is rules::engine_compat_reasons).
#ifndef OMSF2_ENGINE_MANIFEST_HPP
#define OMSF2_ENGINE_MANIFEST_HPP

#include <array>
#include <string>
#include <string_view>

namespace omsf2 {

struct EngineManifest {
  std::string engine_file, engine_sha256, tensorrt_version, gpu_name, precision;
  std::array<int, 2> compute_capability{};
  std::string plugin_library, plugin_library_sha256;  // empty when the engine needs no plugin library
  bool version_compat = false, hardware_compat = false;
};

// EngineManifest.from_dict over the strict JSON rule; throws std::invalid_argument (one line) for a
// document that is not JSON by that rule, not an omsf2 engine manifest, of a newer format, or incomplete.
EngineManifest parse_engine_manifest(std::string_view text);

// engine_manifest.compatibility_error: why the engine cannot load on this TensorRT and GPU, in one
// line that says what was built where and what is running; empty when it can.
std::string compatibility_error(const EngineManifest& m, const std::string& trt_version, const std::string& gpu_name,
                                std::array<int, 2> compute_capability);

}  // namespace omsf2

#endif  // OMSF2_ENGINE_MANIFEST_HPP
