// The C ABI of omsf2_runtime.h over the C++ core: every exception becomes a status and a message.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <optional>
#include <string>

#include "omsf2_bundle.hpp"
#include "omsf2_engine.hpp"
#include "omsf2_engine_manifest.hpp"
#include "omsf2_preprocess.hpp"
#include "omsf2_rules.hpp"
#include "omsf2_runtime.h"

struct omsf2_runtime {
  omsf2::BundleInfo bundle;
  omsf2::OpenedEngine engine;
};

struct omsf2_result {
  int32_t label = 0;
  std::vector<float> probabilities;
  omsf2::Plane heatmap;
};

namespace {

thread_local std::string g_error;

omsf2_status fail(omsf2_status code, const char* msg) noexcept {
  try {
    g_error = msg;
  } catch (...) {  // no memory left for the message: the status still says what happened
    g_error.clear();
  }
  return code;
}

template <class F>
omsf2_status guard(F&& f) noexcept {
  try {
    g_error.clear();  // never allocates
    return f();
  } catch (const omsf2::BundleError& e) {
    return fail(OMSF2_ERR_BUNDLE, e.what());
  } catch (const omsf2::Unsupported& e) {
    return fail(OMSF2_ERR_UNSUPPORTED, e.what());
  } catch (const omsf2::InferenceError& e) {
    return fail(OMSF2_ERR_INFERENCE, e.what());
  } catch (const omsf2::JsonError& e) {
    return fail(OMSF2_ERR_INVALID_ARGUMENT, e.what());
  } catch (const std::invalid_argument& e) {
    return fail(OMSF2_ERR_INVALID_ARGUMENT, e.what());
  } catch (const std::bad_alloc&) {
    return fail(OMSF2_ERR_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return fail(OMSF2_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(OMSF2_ERR_INTERNAL, "unknown error");
  }
}

omsf2::Image to_image(const omsf2_image* im) {
  if (!im || !im->pixels) throw std::invalid_argument("image and its pixels must not be NULL");
  if (im->photometric != OMSF2_MONOCHROME1 && im->photometric != OMSF2_MONOCHROME2)
    throw std::invalid_argument("photometric must be OMSF2_MONOCHROME1 or OMSF2_MONOCHROME2");
  omsf2::Image out;
  out.pixels = im->pixels;
  out.pixels_len = im->pixels_len;
  out.row_stride = im->row_stride;
  out.width = im->width;
  out.height = im->height;
  out.bits_allocated = im->bits_allocated;
  out.bits_stored = im->bits_stored;
  out.pixel_signed = im->pixel_signed != 0;
  out.monochrome1 = im->photometric == OMSF2_MONOCHROME1;
  out.slope = im->rescale_slope;
  out.intercept = im->rescale_intercept;
  out.has_window = im->has_window != 0;
  out.window_center = im->window_center;
  out.window_width = im->window_width;
  out.voi_function = static_cast<int>(im->voi_function);
  return out;
}

omsf2::Spec to_spec(const omsf2_preprocess_spec* s) {
  if (!s) throw std::invalid_argument("spec must not be NULL");
  if (s->height < 1 || s->width < 1 || s->channels < 1 || s->channels > 3)
    throw std::invalid_argument("spec needs positive height/width and 1..3 channels");
  omsf2::Spec out;
  out.height = s->height;
  out.width = s->width;
  out.channels = s->channels;
  out.letterbox = s->letterbox != 0;
  out.pad_value = s->pad_value;
  for (int c = 0; c < 3; ++c) {
    if (!(s->std[c] != 0.0f) && c < s->channels) throw std::invalid_argument("std must be nonzero");
    out.mean[c] = s->mean[c];
    out.std[c] = s->std[c];
  }
  return out;
}

void from_spec(const omsf2::Spec& s, omsf2_preprocess_spec* out) {
  out->height = s.height;
  out->width = s.width;
  out->channels = s.channels;
  out->letterbox = s.letterbox ? 1 : 0;
  out->pad_value = s.pad_value;
  for (int c = 0; c < 3; ++c) out->mean[c] = s.mean[c], out->std[c] = s.std[c];
}

// The engine's outputs checked as omsf2.runtime.predictor checks them, then activated by task.
omsf2_result* finish(const omsf2_runtime& rt, const omsf2::Image& im, std::vector<float>& logits,
                     const omsf2::Plane& heat) {
  if (logits.size() != rt.bundle.classes.size())
    throw omsf2::InferenceError("the model returned " + std::to_string(logits.size()) + " logits; the bundle has " +
                                std::to_string(rt.bundle.classes.size()) + " classes");
  const auto finite = [](float v) { return std::isfinite(v); };
  if (!std::all_of(logits.begin(), logits.end(), finite) || !std::all_of(heat.v.begin(), heat.v.end(), finite))
    throw omsf2::InferenceError("the model (" + rt.engine.backend +
                                ") produced non-finite logits or heat map; the model file or backend is broken");
  const std::vector<double> p = omsf2::rules::activate(rt.bundle.task, logits.data(), logits.size());
  auto res = std::make_unique<omsf2_result>();
  res->label = static_cast<int32_t>(std::max_element(p.begin(), p.end()) - p.begin());  // the first maximum
  res->probabilities.assign(p.begin(), p.end());
  res->heatmap = omsf2::unletterbox(heat, im.height, im.width, rt.bundle.spec);
  return res.release();
}

omsf2::rules::InputAttributes to_attributes(const omsf2_input_attributes* a, uint32_t flags) {
  if (!a) throw std::invalid_argument("attributes must not be NULL");
  const uint32_t known = OMSF2_GATE_ANY_MODALITY | OMSF2_GATE_ALLOW_MISSING_BODY_PART | OMSF2_GATE_ALLOW_MISSING_VIEW;
  if (flags & ~known) throw std::invalid_argument("unknown gating flags " + std::to_string(flags & ~known));
  const auto text = [](const char* s) { return s ? std::optional<std::string>(s) : std::nullopt; };
  omsf2::rules::InputAttributes out;
  out.modality = text(a->modality);
  out.body_part = text(a->body_part_examined);
  out.view = text(a->view_position);
  out.photometric = text(a->photometric);
  out.samples_per_pixel = a->samples_per_pixel;
  out.bits_allocated = a->bits_allocated;
  out.bits_stored = a->bits_stored;
  return out;
}

omsf2_status gate(const omsf2::rules::InputAttributes& attrs, const omsf2::rules::Accepts& accepts, uint32_t flags) {
  const std::string why = omsf2::rules::not_applicable(attrs, accepts, flags);
  return why.empty() ? OMSF2_OK : fail(OMSF2_ERR_NOT_APPLICABLE, why.c_str());
}

}  // namespace

extern "C" {

const char* omsf2_last_error(void) { return g_error.c_str(); }
int32_t omsf2_abi_version(void) { return OMSF2_RUNTIME_ABI_VERSION; }
int32_t omsf2_has_tensorrt(void) { return omsf2::has_tensorrt() ? 1 : 0; }
int32_t omsf2_has_openvino(void) { return omsf2::has_openvino() ? 1 : 0; }
int32_t omsf2_has_signatures(void) { return omsf2::has_signatures() ? 1 : 0; }

const char* omsf2_rules_json(void) {
  static const std::string json = omsf2::rules::as_json();  // built once; thread-safe initialisation
  return json.c_str();
}

omsf2_status omsf2_to_unit_range(const omsf2_image* image, float* out, size_t out_len) {
  return guard([&] {
    const omsf2::Plane p = omsf2::to_unit_range(to_image(image));
    if (!out || out_len < p.v.size()) throw std::invalid_argument("output buffer is NULL or too small");
    std::memcpy(out, p.v.data(), p.v.size() * sizeof(float));
    return OMSF2_OK;
  });
}

omsf2_status omsf2_preprocess(const omsf2_preprocess_spec* spec, const omsf2_image* image, float* out,
                              size_t out_len, omsf2_letterbox* box) {
  return guard([&] {
    const omsf2::Spec s = to_spec(spec);
    const omsf2::Image im = to_image(image);
    if (!out || out_len < static_cast<size_t>(s.channels) * s.height * s.width)
      throw std::invalid_argument("output buffer is NULL or smaller than channels * height * width");
    const omsf2::Letterbox b = omsf2::preprocess(omsf2::to_unit_range(im), s, out);
    if (box) *box = {b.top, b.left, b.new_h, b.new_w};
    return OMSF2_OK;
  });
}

omsf2_status omsf2_unletterbox(const omsf2_preprocess_spec* spec, const float* heatmap, int32_t map_h, int32_t map_w,
                               int32_t image_h, int32_t image_w, float* out, size_t out_len) {
  return guard([&] {
    const omsf2::Spec s = to_spec(spec);
    if (!heatmap || map_h < 1 || map_w < 1 || image_h < 1 || image_w < 1)
      throw std::invalid_argument("heat map must be non-NULL and all sizes positive");
    if (!out || out_len < static_cast<size_t>(image_h) * image_w)
      throw std::invalid_argument("output buffer is NULL or smaller than image_h * image_w");
    omsf2::Plane hm;
    hm.h = map_h;
    hm.w = map_w;
    hm.v.assign(heatmap, heatmap + static_cast<size_t>(map_h) * map_w);
    for (float v : hm.v)
      if (!std::isfinite(v)) throw std::invalid_argument("heat map has non-finite values");
    const omsf2::Plane o = omsf2::unletterbox(hm, image_h, image_w, s);
    std::memcpy(out, o.v.data(), o.v.size() * sizeof(float));
    return OMSF2_OK;
  });
}

omsf2_status omsf2_activate(const char* task, const float* logits, int32_t count, float* out, size_t out_len) {
  return guard([&] {
    if (!task || !logits || !out || count < 1 || out_len < static_cast<size_t>(count))
      throw std::invalid_argument("task, logits and out must not be NULL, count positive and out_len >= count");
    const std::vector<double> p = omsf2::rules::activate(task, logits, static_cast<size_t>(count));
    std::copy(p.begin(), p.end(), out);
    return OMSF2_OK;
  });
}

omsf2_status omsf2_check_engine_compatibility(const char* manifest_json, size_t manifest_len, const char* trt_version,
                                              const char* gpu_name, int32_t cc_major, int32_t cc_minor) {
  return guard([&] {
    if (!manifest_json || !trt_version || !gpu_name)
      throw std::invalid_argument("manifest_json, trt_version and gpu_name must not be NULL");
    const omsf2::EngineManifest m = omsf2::parse_engine_manifest(std::string_view(manifest_json, manifest_len));
    const std::string why = omsf2::compatibility_error(m, trt_version, gpu_name, {cc_major, cc_minor});
    if (!why.empty()) throw omsf2::Unsupported(why);
    return OMSF2_OK;
  });
}

omsf2_status omsf2_check_json(const char* text, size_t len) {
  return guard([&] {
    if (!text && len) throw std::invalid_argument("text must not be NULL");
    omsf2::parse_json(std::string_view(text ? text : "", len));
    return OMSF2_OK;
  });
}

omsf2_status omsf2_check_input(const char* accepts_json, size_t accepts_len, const omsf2_input_attributes* attributes,
                               uint32_t flags) {
  return guard([&] {
    const omsf2::rules::InputAttributes attrs = to_attributes(attributes, flags);
    omsf2::rules::Accepts accepts = omsf2::rules::default_accepts();
    if (accepts_json) {
      const omsf2::Json doc = omsf2::parse_json(std::string_view(accepts_json, accepts_len));
      accepts = omsf2::read_accepts(&doc);
    }
    return gate(attrs, accepts, flags);
  });
}

omsf2_status omsf2_runtime_check_input(const omsf2_runtime* runtime, const omsf2_input_attributes* attributes,
                                       uint32_t flags) {
  return guard([&] {
    if (!runtime) throw std::invalid_argument("runtime must not be NULL");
    return gate(to_attributes(attributes, flags), runtime->bundle.accepts, flags);
  });
}

omsf2_status omsf2_runtime_create_trusted(const char* bundle_dir, const omsf2_runtime_options* options,
                                          const omsf2_trust* trust, omsf2_runtime** out) {
  return guard([&] {
    if (!bundle_dir || !out) throw std::invalid_argument("bundle_dir and out must not be NULL");
    *out = nullptr;
    const std::string backend = options && options->backend ? options->backend : "auto";
    const int threads = options ? options->threads : 0;
    if (threads < 0) throw std::invalid_argument("threads must be 0 or more, got " + std::to_string(threads));
    omsf2::TrustPolicy policy;
    if (trust) {
      if (trust->num_public_keys && !trust->public_key_files)
        throw std::invalid_argument("public_key_files must not be NULL when num_public_keys > 0");
      if (trust->expect_sha256) policy.expect_sha256 = trust->expect_sha256;
      for (size_t k = 0; k < trust->num_public_keys; ++k) {
        if (!trust->public_key_files[k]) throw std::invalid_argument("public_key_files holds a NULL path");
        policy.key_files.emplace_back(trust->public_key_files[k]);
      }
    }
    auto rt = std::make_unique<omsf2_runtime>();
    rt->bundle = omsf2::load_bundle(bundle_dir, policy);
    rt->engine = omsf2::open_engine(rt->bundle, backend, threads);
    *out = rt.release();
    return OMSF2_OK;
  });
}

omsf2_status omsf2_runtime_create_with_options(const char* bundle_dir, const omsf2_runtime_options* options,
                                               omsf2_runtime** out) {
  return omsf2_runtime_create_trusted(bundle_dir, options, nullptr, out);
}

omsf2_status omsf2_runtime_create(const char* bundle_dir, omsf2_runtime** out) {
  return omsf2_runtime_create_with_options(bundle_dir, nullptr, out);
}

void omsf2_runtime_destroy(omsf2_runtime* runtime) { delete runtime; }

const char* omsf2_runtime_digest(const omsf2_runtime* runtime) {
  return runtime ? runtime->bundle.digest.c_str() : nullptr;
}

const char* omsf2_runtime_signer(const omsf2_runtime* runtime) {
  return runtime ? runtime->bundle.signer.c_str() : nullptr;
}

int32_t omsf2_runtime_num_classes(const omsf2_runtime* runtime) {
  return runtime ? static_cast<int32_t>(runtime->bundle.classes.size()) : 0;
}

const char* omsf2_runtime_class_name(const omsf2_runtime* runtime, int32_t index) {
  if (!runtime || index < 0 || index >= static_cast<int32_t>(runtime->bundle.classes.size())) return nullptr;
  return runtime->bundle.classes[static_cast<size_t>(index)].c_str();
}

omsf2_status omsf2_runtime_spec(const omsf2_runtime* runtime, omsf2_preprocess_spec* spec) {
  return guard([&] {
    if (!runtime || !spec) throw std::invalid_argument("runtime and spec must not be NULL");
    from_spec(runtime->bundle.spec, spec);
    return OMSF2_OK;
  });
}

const char* omsf2_runtime_backend(const omsf2_runtime* runtime) {
  return runtime ? runtime->engine.backend.c_str() : nullptr;
}

const char* omsf2_runtime_task(const omsf2_runtime* runtime) {
  return runtime ? runtime->bundle.task.c_str() : nullptr;
}

omsf2_status omsf2_runtime_run(omsf2_runtime* runtime, const omsf2_image* image, omsf2_result** out) {
  return guard([&] {
    if (!runtime || !out) throw std::invalid_argument("runtime and out must not be NULL");
    *out = nullptr;
    if (!runtime->engine.engine)
      throw omsf2::Unsupported("this omsf2 runtime was built without an inference backend (OpenVINO or TensorRT): "
                               "it verifies bundles and preprocesses, but cannot infer");
    const omsf2::Spec& s = runtime->bundle.spec;
    const omsf2::Image im = to_image(image);
    std::vector<float> input(static_cast<size_t>(s.channels) * s.height * s.width);
    omsf2::preprocess(omsf2::to_unit_range(im), s, input.data());
    std::vector<float> logits;
    omsf2::Plane heat;
    runtime->engine.engine->run(input.data(), logits, heat);
    *out = finish(*runtime, im, logits, heat);
    return OMSF2_OK;
  });
}

int32_t omsf2_result_label(const omsf2_result* result) { return result ? result->label : -1; }

const float* omsf2_result_probabilities(const omsf2_result* result) {
  return result ? result->probabilities.data() : nullptr;
}

const float* omsf2_result_heatmap(const omsf2_result* result, int32_t* height, int32_t* width) {
  if (!result) return nullptr;
  if (height) *height = result->heatmap.h;
  if (width) *width = result->heatmap.w;
  return result->heatmap.v.data();
}

void omsf2_result_destroy(omsf2_result* result) { delete result; }

}  // extern "C"
