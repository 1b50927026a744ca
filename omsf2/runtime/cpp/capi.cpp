// The C ABI of omsf2_runtime.h over the C++ core: every exception becomes a status and a message.
#include <cmath>
#include <cstring>
#include <new>
#include <string>

#include "omsf2_bundle.hpp"
#include "omsf2_engine.hpp"
#include "omsf2_preprocess.hpp"
#include "omsf2_runtime.h"

struct omsf2_runtime {
  omsf2::BundleInfo bundle;
  std::unique_ptr<omsf2::Engine> engine;
};

struct omsf2_result {
  int32_t label = 0;
  std::vector<float> probabilities;
  omsf2::Plane heatmap;
};

namespace {

thread_local std::string g_error;

omsf2_status fail(omsf2_status code, const std::string& msg) {
  g_error = msg;
  return code;
}

template <class F>
omsf2_status guard(F&& f) {
  try {
    g_error.clear();
    return f();
  } catch (const omsf2::BundleError& e) {
    return fail(OMSF2_ERR_BUNDLE, e.what());
  } catch (const omsf2::Unsupported& e) {
    return fail(OMSF2_ERR_UNSUPPORTED, e.what());
  } catch (const omsf2::InferenceError& e) {
    return fail(OMSF2_ERR_INFERENCE, e.what());
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
  out.width = im->width;
  out.height = im->height;
  out.bits_allocated = im->bits_allocated;
  out.bits_stored = im->bits_stored;
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

}  // namespace

extern "C" {

const char* omsf2_last_error(void) { return g_error.c_str(); }
int32_t omsf2_abi_version(void) { return OMSF2_RUNTIME_ABI_VERSION; }
int32_t omsf2_has_tensorrt(void) { return omsf2::has_tensorrt() ? 1 : 0; }

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

omsf2_status omsf2_runtime_create(const char* bundle_dir, omsf2_runtime** out) {
  return guard([&] {
    if (!bundle_dir || !out) throw std::invalid_argument("bundle_dir and out must not be NULL");
    *out = nullptr;
    auto rt = std::make_unique<omsf2_runtime>();
    rt->bundle = omsf2::load_bundle(bundle_dir);
    rt->engine = omsf2::open_engine(rt->bundle);
    *out = rt.release();
    return OMSF2_OK;
  });
}

void omsf2_runtime_destroy(omsf2_runtime* runtime) { delete runtime; }

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

omsf2_status omsf2_runtime_run(omsf2_runtime* runtime, const omsf2_image* image, omsf2_result** out) {
  return guard([&] {
    if (!runtime || !out) throw std::invalid_argument("runtime and out must not be NULL");
    *out = nullptr;
    if (!runtime->engine)
      throw omsf2::Unsupported("this omsf2 runtime was built without TensorRT: it verifies bundles and preprocesses, "
                               "but cannot infer");
    const omsf2::Spec& s = runtime->bundle.spec;
    const omsf2::Image im = to_image(image);
    std::vector<float> input(static_cast<size_t>(s.channels) * s.height * s.width);
    omsf2::preprocess(omsf2::to_unit_range(im), s, input.data());
    auto res = std::make_unique<omsf2_result>();
    omsf2::Plane heat;
    runtime->engine->run(input.data(), res->probabilities, heat);
    if (res->probabilities.size() != runtime->bundle.classes.size())
      throw omsf2::InferenceError("the engine's logits do not match the bundle's classes");
    double mx = -INFINITY;
    for (float v : res->probabilities) {
      if (!std::isfinite(v)) throw omsf2::InferenceError("the engine produced non-finite logits");
      mx = std::max(mx, static_cast<double>(v));
    }
    for (float v : heat.v)
      if (!std::isfinite(v)) throw omsf2::InferenceError("the engine produced a non-finite heat map");
    double sum = 0.0;
    std::vector<double> e(res->probabilities.size());
    for (size_t k = 0; k < e.size(); ++k) sum += e[k] = std::exp(res->probabilities[k] - mx);
    for (size_t k = 0; k < e.size(); ++k) {
      res->probabilities[k] = static_cast<float>(e[k] / sum);
      if (res->probabilities[k] > res->probabilities[static_cast<size_t>(res->label)]) res->label = static_cast<int32_t>(k);
    }
    res->heatmap = omsf2::unletterbox(heat, im.height, im.width, s);
    *out = res.release();
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
