// The shared rules' behaviour (omsf2_rules.hpp), written to read like omsf2/runtime/rules.py.
#include "omsf2_rules.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

namespace omsf2::rules {

const BackendRule* backend_rule(std::string_view name) {
  for (const BackendRule& r : kBackends)
    if (name == r.name) return &r;
  return nullptr;
}

bool implemented(std::string_view backend) {
  return std::any_of(std::begin(kImplemented), std::end(kImplemented),
                     [&](const char* n) { return backend == n; });
}

std::string implemented_names() {
  std::string out = "auto";
  for (const char* n : kImplemented) out += std::string(", ") + n;
  return out;
}

const char* activation_of(std::string_view task) {
  for (const TaskActivation& a : kActivation)
    if (task == a.task) return a.activation;
  return nullptr;
}

std::string task_names() {
  std::string out;
  for (const TaskActivation& a : kActivation) out += (out.empty() ? "" : " or ") + std::string(a.task);
  return out;
}

std::string gpu_name_key(std::string_view name) {
  const char* space = " \t\r\n\f\v";
  const size_t first = name.find_first_not_of(space);
  if (first == std::string_view::npos) return "";
  const size_t last = name.find_last_not_of(space);
  std::string key(name.substr(first, last - first + 1));
  // ASCII only, byte by byte (never std::tolower, which follows the locale).
  for (char& c : key)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return key;
}

std::array<long long, 3> parse_trt_version(std::string_view version) {
  std::array<long long, 3> out{0, 0, 0};
  size_t start = 0;
  for (int part = 0; part < 3 && start <= version.size(); ++part) {
    const size_t dot = std::min(version.find('.', start), version.size());
    long long v = 0;
    for (size_t i = start; i < dot; ++i)
      if (version[i] >= '0' && version[i] <= '9') v = std::min(v * 10 + (version[i] - '0'), 1LL << 40);
    out[static_cast<size_t>(part)] = v;
    start = dot + 1;
  }
  return out;
}

std::vector<std::string> engine_compat_reasons(const CompatQuery& q) {
  std::vector<std::string> reasons;
  const auto built_v = parse_trt_version(q.built_trt), run_v = parse_trt_version(q.running_trt);
  if (q.version_compat) {
    if (run_v < built_v)
      reasons.emplace_back(
          "TensorRT is older than the builder (version-compatible engines load only on the same or newer)");
  } else if (run_v != built_v) {
    reasons.emplace_back("TensorRT version differs (rebuild here, or build with version_compat)");
  }
  if (q.hardware_compat) {
    if (q.running_cc < kHardwareCompatMinCC)
      reasons.emplace_back("hardware-compatible (Ampere+) engines need compute capability 8.0 or newer");
  } else if (q.running_cc != q.built_cc) {
    reasons.emplace_back("compute capability differs (rebuild on this GPU, or build with hardware_compat on Ampere+)");
  } else if (gpu_name_key(q.running_gpu) != gpu_name_key(q.built_gpu)) {
    reasons.emplace_back("GPU model differs (engines are tuned for the GPU that built them; rebuild here)");
  }
  return reasons;
}

std::vector<double> activate(std::string_view task, const float* logits, size_t count) {
  const char* act = activation_of(task);
  if (!act) throw std::invalid_argument("unknown task '" + std::string(task) + "'; choose one of " + task_names());
  std::vector<double> p(count);
  if (std::string_view(act) == "sigmoid") {
    for (size_t k = 0; k < count; ++k) p[k] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[k])));
    return p;
  }
  double mx = -INFINITY, sum = 0.0;
  for (size_t k = 0; k < count; ++k) mx = std::max(mx, static_cast<double>(logits[k]));
  for (size_t k = 0; k < count; ++k) sum += p[k] = std::exp(static_cast<double>(logits[k]) - mx);
  for (double& v : p) v /= sum;
  return p;
}


// ------------------------------------------------------------------------------------- input gating

namespace {

// gating._norm: surrounding ASCII whitespace dropped, ASCII letters upper-cased (never the locale).
std::string norm(std::string_view value) {
  const char* space = " \t\r\n\f\v";
  const size_t first = value.find_first_not_of(space);
  if (first == std::string_view::npos) return "";
  std::string out(value.substr(first, value.find_last_not_of(space) - first + 1));
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

std::string joined(const std::vector<std::string>& values, const char* sep) {
  std::string out;
  for (const std::string& v : values) out += (out.empty() ? "" : sep) + v;
  return out;
}

template <class Range>
std::vector<std::string> strings(const Range& r) {
  return std::vector<std::string>(std::begin(r), std::end(r));
}

// Rules 1-3: the value must be one of `allowed`; absent only when `missing_ok`.
std::string coded_rule(const std::optional<std::string>& value, const std::vector<std::string>& allowed,
                       const char* what, const char* keyword, bool missing_ok) {
  const std::string v = value ? norm(*value) : "";
  if (v.empty())
    return missing_ok ? "" : std::string("not applicable: no ") + keyword + " (this bundle accepts " + joined(allowed, ", ") + ")";
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
    return std::string("not applicable: ") + what + " " + v + " (this bundle accepts " + joined(allowed, ", ") + ")";
  return "";
}

// Rule 4: a one-sample grayscale image of 8 or 16 bits.
std::string pixel_rule(const InputAttributes& a) {
  const std::string photometric = a.photometric ? norm(*a.photometric) : "";
  if (std::none_of(std::begin(kPhotometric), std::end(kPhotometric), [&](const char* p) { return photometric == p; }))
    return "not applicable: photometric interpretation " + (photometric.empty() ? std::string("missing") : photometric) +
           " (a radiograph is " + joined(strings(kPhotometric), " or ") + ")";
  const int samples = a.samples_per_pixel ? a.samples_per_pixel : 1;
  if (samples != kSamplesPerPixel)
    return "not applicable: " + std::to_string(samples) + " samples per pixel (a radiograph has " +
           std::to_string(kSamplesPerPixel) + ")";
  if (std::none_of(std::begin(kBitsAllocated), std::end(kBitsAllocated), [&](int b) { return a.bits_allocated == b; })) {
    std::vector<std::string> bits;
    for (int b : kBitsAllocated) bits.push_back(std::to_string(b));
    return "not applicable: " + (a.bits_allocated ? std::to_string(a.bits_allocated) : std::string("no")) +
           " bits allocated (a radiograph has " + joined(bits, " or ") + ")";
  }
  const int stored = a.bits_stored ? a.bits_stored : a.bits_allocated;
  if (stored < 1 || stored > a.bits_allocated)
    return "not applicable: " + std::to_string(stored) + " bits stored in " + std::to_string(a.bits_allocated) +
           " allocated";
  return "";
}

}  // namespace

Accepts default_accepts() { return {strings(kModalities), strings(kBodyParts), strings(kViews)}; }

std::vector<std::string> accepted_terms(const std::vector<std::string>& values, const std::string& what) {
  std::set<std::string> unique;
  for (const std::string& v : values) unique.insert(norm(v));
  const auto bad = [](const std::string& v) {
    return v.empty() || v.size() > 16 || std::any_of(v.begin(), v.end(), [](char c) {
             return !((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ' ');
           });
  };
  if (unique.empty() || std::any_of(unique.begin(), unique.end(), bad))
    throw std::invalid_argument(what + " must be a non-empty list of DICOM code strings (letters, digits, '_')");
  return std::vector<std::string>(unique.begin(), unique.end());
}

std::string not_applicable(const InputAttributes& attrs, const Accepts& accepts, unsigned flags) {
  std::string why;
  if (!(flags & kGateAnyModality)) why = coded_rule(attrs.modality, accepts.modalities, "modality", "Modality", false);
  if (why.empty())
    why = coded_rule(attrs.body_part, accepts.body_parts, "body part", "BodyPartExamined",
                     (flags & kGateAllowMissingBodyPart) != 0);
  if (why.empty()) why = coded_rule(attrs.view, accepts.views, "view", "ViewPosition", (flags & kGateAllowMissingView) != 0);
  return why.empty() ? pixel_rule(attrs) : why;
}

// ------------------------------------------------------------------------------------- as JSON

namespace {

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;  // the table holds printable ASCII only
  }
  return out + "\"";
}

template <class Range, class F>
std::string list(const Range& items, F&& item) {
  std::string out = "[";
  for (const auto& x : items) {
    if (out.size() > 1) out += ", ";
    out += item(x);
  }
  return out + "]";
}

std::string backend_json(const BackendRule& r) {
  std::vector<const char*> arts;
  for (const char* a : r.artifacts)
    if (a) arts.push_back(a);
  return "{\"name\": " + quote(r.name) + ", \"artifacts\": " + list(arts, quote) +
         ", \"device\": " + quote(r.device) + ", \"precision\": " + quote(r.precision) + "}";
}

std::string gating_json() {
  std::string optional = "{";
  for (const OptionalAttribute& o : kOptionalAttributes)
    optional += (optional.size() > 1 ? ", " : "") + quote(o.name) + ": " + quote(o.keyword);
  auto num = [](int v) { return std::to_string(v); };
  return "{\"modalities\": " + list(kModalities, quote) + ", \"body_parts\": " + list(kBodyParts, quote) +
         ", \"views\": " + list(kViews, quote) + ", \"photometric\": " + list(kPhotometric, quote) +
         ", \"samples_per_pixel\": " + num(kSamplesPerPixel) + ", \"bits_allocated\": " + list(kBitsAllocated, num) +
         ", \"optional_attributes\": " + optional + "}, \"flags\": {\"any_modality\": " + num(kGateAnyModality) +
         ", \"allow_missing_body_part\": " + num(kGateAllowMissingBodyPart) +
         ", \"allow_missing_view\": " + num(kGateAllowMissingView) + "}}";
}

}  // namespace

std::string as_json() {
  std::string activation = "{";
  for (const TaskActivation& a : kActivation)
    activation += (activation.size() > 1 ? ", " : "") + quote(a.task) + ": " + quote(a.activation);
  activation += "}";
  auto num = [](int v) { return std::to_string(v); };
  return "{\"rules_version\": " + num(kRulesVersion) + ", \"bundle_format\": " + quote(kBundleFormat) +
         ", \"bundle_format_version\": " + num(kBundleFormatVersion) +
         ", \"engine_manifest_format\": " + quote(kEngineManifestFormat) +
         ", \"engine_manifest_format_version\": " + num(kEngineManifestFormatVersion) +
         ", \"plugin_library\": " + quote(kPluginLibrary) + ", \"activation\": " + activation +
         ", \"hardware_compat_min_cc\": " + list(kHardwareCompatMinCC, num) +
         ", \"json_max_depth\": " + num(kJsonMaxDepth) + ", \"auto_order\": " + list(kAutoOrder, quote) +
         ", \"backends\": " + list(kBackends, backend_json) + ", \"gating\": " + gating_json() + "}";
}

}  // namespace omsf2::rules
