// The manifest held to the model files it names (omsf2.runtime.model_check; see model_check.cpp).
#ifndef OMSF2_MODEL_CHECK_HPP
#define OMSF2_MODEL_CHECK_HPP

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "omsf2_json.hpp"

namespace omsf2 {

// The manifest and a model file disagree; the message is one line naming the field, word for word
// the one omsf2.runtime.model_check.ModelMismatch carries.
struct ModelMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A model input or output: ONNX element type (1 = float32) and dims (nullopt: dynamic); no dims at all
// when the file gives no shape.
struct TensorInfo {
  int elem_type = 0;
  std::optional<std::vector<std::optional<int64_t>>> dims;
};

// What a model file says about itself.
struct ModelInfo {
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorInfo> tensors;
  bool has_metadata = true;
};

// What the manifest says about its model.
struct ManifestFields {
  const Json* classes = nullptr;     // array of strings
  std::string task = "multiclass";
  const Json* preprocess = nullptr;  // object
  std::string checkpoint_sha256;     // empty when the manifest records none
};

// ModelProto.metadata_props and graph.input / graph.output of serialized ONNX bytes, read by a
// protobuf wire-format reader (no protobuf or ONNX library). Throws std::invalid_argument.
ModelInfo onnx_model_info(std::string_view data);
// What an engine manifest (*.engine.json, parsed) says: its "metadata" and its tensors.
ModelInfo engine_model_info(const Json& manifest);

// model_check.check_model: throws ModelMismatch at the first field that differs.
void check_model(const ManifestFields& fields, const ModelInfo& info, const std::string& file,
                 const std::string& what = "manifest.json");

}  // namespace omsf2

#endif  // OMSF2_MODEL_CHECK_HPP
