// Backend choice by the rules' table, as omsf2.runtime.predictor.open_session chooses.
#include <string>
#include <vector>

#include "omsf2_engine.hpp"
#include "omsf2_rules.hpp"

namespace omsf2 {

namespace {

bool built_in(const std::string& backend) {
  return backend == "tensorrt" ? has_tensorrt() : has_openvino();  // the other two are OpenVINO's
}

// The first of the backend's files (in the rules' order of preference) that the bundle holds.
std::string artifact_for(const BundleInfo& bundle, const rules::BackendRule& rule, std::string& why) {
  std::string wanted, have;
  for (const char* a : rule.artifacts) {
    if (!a) continue;
    const auto it = bundle.artifacts.find(a);
    if (it != bundle.artifacts.end()) return it->second;
    wanted += (wanted.empty() ? "" : " or ") + std::string(a);
  }
  for (const auto& kv : bundle.artifacts) have += (have.empty() ? "" : ", ") + kv.first;
  why = std::string(rule.name) + ": the bundle has no " + wanted + " (it has " + have + ")";
  return "";
}

std::unique_ptr<Engine> open_one(const BundleInfo& bundle, const std::string& name, const std::string& file,
                                 int threads) {
  if (name == "tensorrt") return open_tensorrt(bundle, file);
  return open_openvino(bundle, file, threads);
}

std::vector<std::string> candidates(const std::string& backend) {
  if (backend != "auto") {
    if (!rules::backend_rule(backend))
      throw std::invalid_argument("unknown backend '" + backend + "'; choose one of " + rules::implemented_names());
    if (!rules::implemented(backend))
      throw std::invalid_argument("backend '" + backend + "' is not implemented by the C library; choose one of " +
                                  rules::implemented_names());
    return {backend};
  }
  std::vector<std::string> names;
  for (const char* n : rules::kAutoOrder)
    if (rules::implemented(n)) names.emplace_back(n);
  return names;
}

}  // namespace

std::string one_line(const std::string& text, size_t limit) {
  std::string out;
  bool space = false;
  for (char c : text) {
    const bool ws = c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == '\v';
    if (ws) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ', space = false;
    out += c;
  }
  return out.size() <= limit ? out : out.substr(0, limit - 3) + "...";
}

OpenedEngine open_engine(const BundleInfo& bundle, const std::string& backend, int threads) {
  if (backend == "auto" && !has_openvino() && !has_tensorrt()) return {nullptr, ""};
  std::string reasons;
  for (const std::string& name : candidates(backend)) {
    std::string why;
    const std::string file = artifact_for(bundle, *rules::backend_rule(name), why);
    if (file.empty() || !built_in(name)) {
      if (why.empty())
        why = name + ": this omsf2 runtime was built without " + (name == "tensorrt" ? "TensorRT" : "OpenVINO");
      reasons += (reasons.empty() ? "" : "; ") + why;
      continue;
    }
    try {
      return {open_one(bundle, name, file, threads), name};
    } catch (const Unsupported& e) {  // another GPU or TensorRT: auto moves on, as Python's does
      if (backend != "auto") throw;
      reasons += (reasons.empty() ? "" : "; ") + name + ": " + e.what();
    } catch (const InferenceError& e) {
      if (backend != "auto") throw;
      reasons += (reasons.empty() ? "" : "; ") + name + ": " + e.what();
    }
  }
  throw Unsupported("no backend can run this bundle here: " + reasons);
}

}  // namespace omsf2
