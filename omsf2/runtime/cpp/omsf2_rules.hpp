// The rules the C/C++ runtime shares with Python: this side's one table.
//
// omsf2/runtime/rules.py holds the same table for Python. tests/runtime/test_rules_parity.py holds the
// two together: omsf2_rules_json() must equal rules.as_dict(), and engine compatibility, activation
// by task and the strict JSON rule must agree case by case. Change a rule here and that test fails
// until rules.py follows (and the other way round).
#ifndef OMSF2_RULES_HPP
#define OMSF2_RULES_HPP

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace omsf2::rules {

// Bumped when a rule changes meaning; both sides report it.
inline constexpr int kRulesVersion = 2;
inline constexpr const char* kBundleFormat = "omsf2-bundle";
inline constexpr int kBundleFormatVersion = 1;
inline constexpr const char* kEngineManifestFormat = "omsf2-engine-manifest";
inline constexpr int kEngineManifestFormatVersion = 1;
// The TensorRT plugin library an engine with omsf2 custom ops needs; it sits in the bundle folder.
inline constexpr const char* kPluginLibrary = "libomsf2_plugins.so";

struct TaskActivation {
  const char* task;
  const char* activation;
};
// task -> activation of the logits.
inline constexpr TaskActivation kActivation[] = {{"multiclass", "softmax"}, {"multilabel", "sigmoid"}};

// hardware_compat (Ampere+) engines load on compute capability 8.0 or newer.
inline constexpr std::array<int, 2> kHardwareCompatMinCC = {8, 0};
// Manifests nest a few levels; a deeper document is refused rather than parsed recursively.
inline constexpr int kJsonMaxDepth = 32;

// One backend: the bundle files it runs (in order of preference; unused slots are null), where,
// and at what precision.
struct BackendRule {
  const char* name;
  const char* artifacts[3];
  const char* device;
  const char* precision;
};

inline constexpr BackendRule kBackends[] = {
    {"ort", {"onnx"}, "cpu", "fp32"},
    {"ort-int8", {"onnx_int8_cpu", "onnx_int8"}, "cpu", "int8"},
    {"openvino", {"onnx"}, "cpu", "fp32"},
    {"openvino-int8", {"onnx_int8_cpu", "onnx_int8"}, "cpu", "int8"},
    {"openvino-bf16", {"onnx"}, "cpu", "bf16"},
    {"tensorrt", {"engine_int8", "engine_fp16", "engine_fp32"}, "cuda", "engine"},
    {"ort-cuda", {"onnx"}, "cuda", "fp32"},
    {"ort-trt", {"onnx_int8"}, "cuda", "int8"},
    {"triton", {}, "remote", "server"},
};
// What "auto" tries, in order; each side skips the backends it does not implement.
inline constexpr const char* kAutoOrder[] = {"tensorrt", "ort", "openvino"};
// The backends of kBackends this library implements (not part of the shared table: Python has more).
inline constexpr const char* kImplemented[] = {"openvino", "openvino-int8", "tensorrt"};

// The rule of a backend name, or null for an unknown name.
const BackendRule* backend_rule(std::string_view name);
bool implemented(std::string_view backend);
// "auto, openvino, openvino-int8, tensorrt": what a caller of this library may ask for.
std::string implemented_names();
// The activation of a task ("softmax", "sigmoid"), or null for an unknown task.
const char* activation_of(std::string_view task);
// "multiclass or multilabel", for messages.
std::string task_names();

// How GPU names compare: surrounding ASCII whitespace dropped, ASCII letters lower-cased.
std::string gpu_name_key(std::string_view name);
// "10.3.0.30" -> {10, 3, 0}: missing components are 0, non-digits inside a component are ignored.
std::array<long long, 3> parse_trt_version(std::string_view version);

struct CompatQuery {
  std::string built_trt, built_gpu, running_trt, running_gpu;
  std::array<int, 2> built_cc{}, running_cc{};
  bool version_compat = false, hardware_compat = false;
};
// Why an engine built with `built_*` cannot load on `running_*` (empty: it can).
std::vector<std::string> engine_compat_reasons(const CompatQuery& q);

// Probabilities (double) from logits by the task's activation; throws std::invalid_argument for an
// unknown task. softmax subtracts the maximum first; sigmoid is 1 / (1 + exp(-x)) per value.
std::vector<double> activate(std::string_view task, const float* logits, size_t count);

// ------------------------------------------------------------------ clinical input gating (gating.py)
// Which DICOM images may be analysed at all: the defaults a bundle without "accepts" gets, what a
// radiograph's pixels are, and the flags a site may set. not_applicable() applies them in
// omsf2.runtime.gating.not_applicable's order and returns its reason word for word.
inline constexpr const char* kModalities[] = {"CR", "DR", "DX"};
inline constexpr const char* kBodyParts[] = {"CHEST"};
inline constexpr const char* kViews[] = {"AP", "PA"};
inline constexpr const char* kPhotometric[] = {"MONOCHROME1", "MONOCHROME2"};
inline constexpr int kSamplesPerPixel = 1;
inline constexpr int kBitsAllocated[] = {8, 16};
struct OptionalAttribute {
  const char* name;     // --allow-missing NAME
  const char* keyword;  // its DICOM keyword
};
inline constexpr OptionalAttribute kOptionalAttributes[] = {{"body-part", "BodyPartExamined"}, {"view", "ViewPosition"}};
inline constexpr unsigned kGateAnyModality = 1, kGateAllowMissingBodyPart = 2, kGateAllowMissingView = 4;

// What a bundle's model accepts (sorted, upper case); a manifest without "accepts" gets the defaults.
struct Accepts {
  std::vector<std::string> modalities, body_parts, views;
};
Accepts default_accepts();
// The manifest's "accepts" values of one key normalised as gating._terms does: trimmed, ASCII upper
// case, sorted, unique; throws std::invalid_argument("<what> must be ...") for an empty list or a
// value that is not a DICOM code string.
std::vector<std::string> accepted_terms(const std::vector<std::string>& values, const std::string& what);

// The attributes the rules read; nullopt (0 for numbers) where the header has none.
struct InputAttributes {
  std::optional<std::string> modality, body_part, view, photometric;
  int samples_per_pixel = 0, bits_allocated = 0, bits_stored = 0;
};
// Why an image must not be analysed ("not applicable: ..."), or "" when every rule passes.
std::string not_applicable(const InputAttributes& attrs, const Accepts& accepts, unsigned flags);

// The table as JSON, in the layout of rules.as_dict().
std::string as_json();

}  // namespace omsf2::rules

#endif  // OMSF2_RULES_HPP
