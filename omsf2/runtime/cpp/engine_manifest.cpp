// Engine manifests (omsf2_engine_manifest.hpp): read like EngineManifest.from_dict, judged by the
// shared rule, with the message of omsf2.runtime.engine_manifest.compatibility_error.
#include "omsf2_engine_manifest.hpp"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "omsf2_json.hpp"
#include "omsf2_rules.hpp"

namespace omsf2 {

namespace {

std::string text_field(const Json& m, const char* key, std::vector<std::string>& missing) {
  const Json* v = m.get(key);
  if (!v) {
    missing.emplace_back(key);
    return "";
  }
  if (v->kind != Json::String)
    throw std::invalid_argument(std::string("engine manifest: '") + key + "' is not a string");
  return v->str;
}

std::array<int, 2> compute_capability(const Json& m, std::vector<std::string>& missing) {
  const Json* cc = m.get("compute_capability");
  if (!cc) {
    missing.emplace_back("compute_capability");
    return {0, 0};
  }
  if (cc->kind != Json::Array || cc->array.size() != 2)
    throw std::invalid_argument("engine manifest: 'compute_capability' is not [major, minor]");
  std::array<int, 2> out{};
  for (size_t k = 0; k < 2; ++k) {
    const Json& v = cc->array[k];
    if (v.kind != Json::Number || std::fabs(v.number) > 1e6)
      throw std::invalid_argument("engine manifest: 'compute_capability' holds a non-number");
    out[k] = static_cast<int>(v.number);  // int() in Python truncates toward zero as well
  }
  return out;
}

void check_format(const Json& m) {
  const Json* format = m.get("format");
  if (m.kind != Json::Object || !format || format->kind != Json::String || format->str != rules::kEngineManifestFormat)
    throw std::invalid_argument("not an omsf2 engine manifest");
  const Json* version = m.get("format_version");
  if (version && version->kind == Json::Number && version->number > rules::kEngineManifestFormatVersion)
    throw std::invalid_argument("engine manifest format version " + std::to_string(int64_t(version->number)) +
                                "; this omsf2 reads up to " + std::to_string(rules::kEngineManifestFormatVersion));
}

std::string sm(std::array<int, 2> cc) { return "sm_" + std::to_string(cc[0]) + std::to_string(cc[1]); }

}  // namespace

EngineManifest parse_engine_manifest(std::string_view text) {
  Json m;
  try {
    m = parse_json(text);
  } catch (const JsonError& e) {
    throw std::invalid_argument(std::string("engine manifest is not valid JSON (") + e.what() + ")");
  }
  check_format(m);
  std::vector<std::string> missing;
  EngineManifest out;
  out.engine_file = text_field(m, "engine_file", missing);
  out.engine_sha256 = text_field(m, "engine_sha256", missing);
  out.tensorrt_version = text_field(m, "tensorrt_version", missing);
  out.gpu_name = text_field(m, "gpu_name", missing);
  out.compute_capability = compute_capability(m, missing);
  out.precision = text_field(m, "precision", missing);
  for (const char* key : {"inputs", "outputs"})
    if (!m.get(key)) missing.emplace_back(key);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& k : missing) list += (list.empty() ? "'" : ", '") + k + "'";
    throw std::invalid_argument("engine manifest lacks [" + list + "]");
  }
  if (const Json* lib = m.get("plugin_library"); lib && lib->truthy()) {
    if (lib->kind != Json::String) throw std::invalid_argument("engine manifest: 'plugin_library' is not a string");
    out.plugin_library = lib->str;
    const Json* sha = m.get("plugin_library_sha256");
    out.plugin_library_sha256 = sha && sha->kind == Json::String ? sha->str : "";
  }
  if (const Json* build = m.get("build"); build && build->kind == Json::Object) {
    const Json* vc = build->get("version_compat");
    const Json* hc = build->get("hardware_compat");
    out.version_compat = vc && vc->truthy();
    out.hardware_compat = hc && hc->truthy();
  }
  return out;
}

std::string compatibility_error(const EngineManifest& m, const std::string& trt_version, const std::string& gpu_name,
                                std::array<int, 2> cc) {
  rules::CompatQuery q;
  q.built_trt = m.tensorrt_version, q.built_gpu = m.gpu_name, q.built_cc = m.compute_capability;
  q.running_trt = trt_version, q.running_gpu = gpu_name, q.running_cc = cc;
  q.version_compat = m.version_compat, q.hardware_compat = m.hardware_compat;
  const std::vector<std::string> reasons = rules::engine_compat_reasons(q);
  if (reasons.empty()) return "";
  std::string out = "engine '" + m.engine_file + "' was built with TensorRT " + m.tensorrt_version + " on " +
                    m.gpu_name + " (" + sm(m.compute_capability) + "); running TensorRT " + trt_version + " on " +
                    gpu_name + " (" + sm(cc) + "): ";
  for (size_t k = 0; k < reasons.size(); ++k) out += (k ? "; " : "") + reasons[k];
  return out;
}

}  // namespace omsf2
