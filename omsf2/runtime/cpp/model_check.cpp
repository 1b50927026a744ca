// The manifest held to its model files, as omsf2.runtime.model_check does, with the same messages.
//
// Why a protobuf reader of our own instead of OpenVINO's rt_info: the check must run in every build
// of the library (one without OpenVINO or TensorRT still verifies bundles), before any backend
// deserialises the file, and on the bytes that were hashed. ONNX's wire format needs only varints
// and length-delimited fields to reach ModelProto.metadata_props (14) and graph (7) -> input (11) /
// output (12) -> type (2) -> tensor_type (1) -> elem_type (1), shape (2) -> dim (1) -> dim_value (1);
// the weights inside the graph are skipped by their length, never copied.
#include "omsf2_model_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

namespace omsf2 {

namespace {

// ------------------------------------------------------------------------------------- wire format

struct Field {
  uint32_t number = 0;
  int wire = 0;
  uint64_t value = 0;        // varint
  std::string_view payload;  // length-delimited
};

class Reader {
 public:
  explicit Reader(std::string_view data) : p_(data.data()), end_(data.data() + data.size()) {}

  bool next(Field& f) {
    if (p_ >= end_) return false;
    const uint64_t key = varint();
    f.number = static_cast<uint32_t>(key >> 3), f.wire = static_cast<int>(key & 7);
    if (f.wire == 0) {
      f.value = varint();
    } else if (f.wire == 2) {
      const uint64_t n = varint();
      if (n > static_cast<uint64_t>(end_ - p_)) throw std::invalid_argument("a field runs past the end of the file");
      f.payload = std::string_view(p_, static_cast<size_t>(n));
      p_ += n;
    } else if (f.wire == 1 || f.wire == 5) {
      const ptrdiff_t n = f.wire == 1 ? 8 : 4;
      if (end_ - p_ < n) throw std::invalid_argument("truncated fixed-width field");
      p_ += n;
    } else {
      throw std::invalid_argument("unsupported wire type " + std::to_string(f.wire));
    }
    return true;
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (p_ >= end_ || shift > 63) throw std::invalid_argument("truncated varint");
      const auto b = static_cast<unsigned char>(*p_++);
      v |= uint64_t(b & 0x7F) << shift;
      if (b < 0x80) return v;
    }
  }
  const char* p_;
  const char* end_;
};

void each(std::string_view data, const std::function<void(const Field&)>& fn) {
  Reader r(data);
  Field f;
  while (r.next(f)) fn(f);
}

std::optional<int64_t> dim(std::string_view data) {
  std::optional<int64_t> out;
  each(data, [&](const Field& f) {
    if (f.number == 1 && f.wire == 0 && !out && f.value < (uint64_t(1) << 63)) out = int64_t(f.value);
  });
  return out;
}

std::pair<std::string, TensorInfo> tensor(std::string_view value_info) {
  std::string name;
  TensorInfo t;
  each(value_info, [&](const Field& f) {
    if (f.number == 1 && f.wire == 2) name = std::string(f.payload);
    if (f.number != 2 || f.wire != 2) return;
    each(f.payload, [&](const Field& type) {
      if (type.number != 1 || type.wire != 2) return;
      each(type.payload, [&](const Field& tt) {
        if (tt.number == 1 && tt.wire == 0) t.elem_type = static_cast<int>(tt.value);
        if (tt.number == 2 && tt.wire == 2) {
          std::vector<std::optional<int64_t>> dims;
          each(tt.payload, [&](const Field& d) {
            if (d.number == 1 && d.wire == 2) dims.push_back(dim(d.payload));
          });
          t.dims = dims;
        }
      });
    });
  });
  return {name, t};
}

// ------------------------------------------------------------------------------------- the comparison

const Json* member(const Json* obj, const char* key) {
  return obj && obj->kind == Json::Object ? obj->get(key) : nullptr;
}

// A preprocessing value canonicalised as Python compares it (a single mean or std stands for every channel).
struct Canon {
  bool valid = false;
  std::string text;
  std::vector<double> numbers;
  bool operator==(const Canon& o) const { return valid && o.valid && text == o.text && numbers == o.numbers; }
};

Json default_of(const std::string& key) {
  static const char* defaults[][2] = {{"size", "[224, 224]"}, {"resize", "\"letterbox\""}, {"channels", "1"},
                                      {"mean", "[0.5]"},      {"std", "[0.25]"},           {"pad_value", "0.0"}};
  for (const auto& d : defaults)
    if (key == d[0]) return parse_json(d[1]);
  return Json();
}

int channels_of(const Json& pre) {
  const Json* c = pre.get("channels");
  if (!c) return 1;
  return c->kind == Json::Number && c->integer ? static_cast<int>(c->number) : 1;
}

Canon canon(const Json& pre, const std::string& key) {
  const Json* given = pre.get(key);
  const Json fallback = given ? Json() : default_of(key);
  const Json& v = given ? *given : fallback;
  Canon c;
  if (key == "mean" || key == "std") {
    if (v.kind != Json::Array || v.array.empty()) return c;
    for (const Json& x : v.array)
      if (x.kind != Json::Number) return c;
    for (int ch = 0; ch < channels_of(pre); ++ch)
      c.numbers.push_back(v.array[std::min<size_t>(ch, v.array.size() - 1)].number);
  } else if (v.kind == Json::Number) {
    if (key == "pad_value" && !std::isfinite(v.number)) return c;
    c.numbers.push_back(v.number);
  } else if (v.kind == Json::String) {
    c.text = "s:" + v.str;
  } else if (v.kind == Json::Array) {
    for (const Json& x : v.array) {
      if (x.kind != Json::Number) return c;
      c.numbers.push_back(x.number);
    }
    c.text = "a";
  } else {
    return c;  // null, a bool or an object: never equal
  }
  c.valid = true;
  return c;
}

std::string shape(const std::optional<std::vector<std::optional<int64_t>>>& dims) {
  std::string out = "[";
  if (dims)
    for (size_t k = 0; k < dims->size(); ++k)
      out += (k ? ", " : "") + ((*dims)[k] ? std::to_string(*(*dims)[k]) : std::string("?"));
  return out + "]";
}

Json json_prop(const ModelInfo& info, const std::string& key, const std::string& file) {
  try {
    return parse_json(info.metadata.at(key));
  } catch (const JsonError&) {
    throw ModelMismatch("'" + file + "' has an unreadable " + key + " metadata prop (not JSON)");
  }
}

bool same_classes(const Json& model, const Json& manifest) {
  if (model.kind != Json::Array || manifest.kind != Json::Array || model.array.size() != manifest.array.size())
    return false;
  for (size_t k = 0; k < model.array.size(); ++k)
    if (model.array[k].kind != Json::String || model.array[k].str != manifest.array[k].str) return false;
  return true;
}

void check_metadata(const ManifestFields& f, const ModelInfo& info, const std::string& file, const std::string& what) {
  if (!info.has_metadata) return;
  for (const char* key : {"omsf2.classes", "omsf2.preprocess"})
    if (!info.metadata.count(key))
      throw ModelMismatch("'" + file + "' carries no " + key + " metadata: it is not an omsf2 export (re-export it)");
  if (!same_classes(json_prop(info, "omsf2.classes", file), *f.classes))
    throw ModelMismatch(what + "'s classes differ from omsf2.classes in '" + file + "'");
  const auto task = info.metadata.find("omsf2.task");
  if ((task == info.metadata.end() ? std::string("multiclass") : task->second) != f.task)
    throw ModelMismatch(what + "'s task differs from omsf2.task in '" + file + "'");
  const Json pre = json_prop(info, "omsf2.preprocess", file);
  if (pre.kind != Json::Object)
    throw ModelMismatch("'" + file + "' has an unreadable omsf2.preprocess metadata prop (not an object)");
  for (const char* key : {"size", "resize", "channels", "mean", "std", "pad_value"})
    if (!(canon(*f.preprocess, key) == canon(pre, key)))
      throw ModelMismatch(what + "'s preprocess " + key + " differs from omsf2.preprocess in '" + file + "'");
  const auto ckpt = info.metadata.find("omsf2.checkpoint_sha256");
  if (!f.checkpoint_sha256.empty() && ckpt != info.metadata.end() && !ckpt->second.empty() &&
      ckpt->second != f.checkpoint_sha256)
    throw ModelMismatch(what + "'s checkpoint sha256 differs from omsf2.checkpoint_sha256 in '" + file +
                        "': it is another model's file");
}

void check_tensors(const ManifestFields& f, const ModelInfo& info, const std::string& file, const std::string& what) {
  const Json& pre = *f.preprocess;
  const Json* size = pre.get("size");
  std::optional<int64_t> want[3] = {channels_of(pre), 224, 224};
  if (size && size->kind == Json::Array && size->array.size() == 2)
    want[1] = int64_t(size->array[0].number), want[2] = int64_t(size->array[1].number);
  const auto image = info.tensors.find("image");
  if (image == info.tensors.end() || image->second.elem_type != 1 || !image->second.dims ||
      image->second.dims->size() != 4) {
    const bool typed = image != info.tensors.end() && image->second.elem_type == 1;
    throw ModelMismatch("'" + file + "' does not take a float32 image of shape [N, C, H, W] (" +
                        (typed ? shape(image->second.dims) : std::string("no float32 input 'image'")) + ")");
  }
  const auto& d = *image->second.dims;
  for (int k = 0; k < 3; ++k)
    if (d[k + 1] && *d[k + 1] != *want[k])
      throw ModelMismatch("'" + file + "' takes image " + shape(image->second.dims) + "; " + what +
                          "'s preprocess needs [N, " + std::to_string(*want[0]) + ", " + std::to_string(*want[1]) +
                          ", " + std::to_string(*want[2]) + "]");
  const auto logits = info.tensors.find("logits");
  const auto k = static_cast<int64_t>(f.classes->array.size());
  const bool fits = logits != info.tensors.end() && logits->second.dims && logits->second.dims->size() == 2 &&
                    (!(*logits->second.dims)[1] || *(*logits->second.dims)[1] == k);
  if (!fits)
    throw ModelMismatch("'" + file + "' returns logits " +
                        (logits == info.tensors.end() ? std::string("none") : shape(logits->second.dims)) + "; " +
                        what + " has " + std::to_string(k) + " classes ([N, " + std::to_string(k) + "])");
  if (!info.tensors.count("heatmap")) throw ModelMismatch("'" + file + "' has no 'heatmap' output");
}

}  // namespace

ModelInfo onnx_model_info(std::string_view data) {
  ModelInfo info;
  bool graph = false;
  each(data, [&](const Field& f) {
    if (f.number == 14 && f.wire == 2) {
      std::string key, value;
      each(f.payload, [&](const Field& e) {
        if (e.wire == 2 && e.number == 1) key = std::string(e.payload);
        if (e.wire == 2 && e.number == 2) value = std::string(e.payload);
      });
      info.metadata[key] = value;
    } else if (f.number == 7 && f.wire == 2) {
      graph = true;
      each(f.payload, [&](const Field& g) {
        if ((g.number == 11 || g.number == 12) && g.wire == 2) info.tensors.insert(tensor(g.payload));
      });
    }
  });
  if (!graph) throw std::invalid_argument("no graph");
  return info;
}

ModelInfo engine_model_info(const Json& manifest) {
  ModelInfo info;
  const Json* meta = manifest.get("metadata");
  info.has_metadata = meta && meta->kind == Json::Object && !meta->object.empty();
  if (info.has_metadata)
    for (const auto& [key, value] : meta->object)
      if (value.kind == Json::String) info.metadata[key] = value.str;
  for (const char* list : {"inputs", "outputs"}) {
    const Json* tensors = manifest.get(list);
    if (!tensors || tensors->kind != Json::Array) continue;
    for (const Json& t : tensors->array) {
      const Json* name = member(&t, "name");
      if (!name || name->kind != Json::String || info.tensors.count(name->str)) continue;
      TensorInfo ti;
      const Json* dtype = member(&t, "dtype");
      ti.elem_type = dtype && dtype->kind == Json::String && dtype->str == "float32" ? 1 : 0;
      std::vector<std::optional<int64_t>> dims;
      if (const Json* s = member(&t, "shape"); s && s->kind == Json::Array)
        for (const Json& v : s->array)
          dims.push_back(v.kind == Json::Number && v.integer && v.number >= 0
                             ? std::optional<int64_t>(int64_t(v.number))
                             : std::nullopt);
      ti.dims = dims;
      info.tensors[name->str] = ti;
    }
  }
  return info;
}

void check_model(const ManifestFields& fields, const ModelInfo& info, const std::string& file,
                 const std::string& what) {
  if (!fields.classes || fields.classes->kind != Json::Array || !fields.preprocess ||
      fields.preprocess->kind != Json::Object)
    throw std::invalid_argument("check_model needs the manifest's classes and preprocess");
  check_metadata(fields, info, file, what);
  check_tensors(fields, info, file, what);
}

}  // namespace omsf2
