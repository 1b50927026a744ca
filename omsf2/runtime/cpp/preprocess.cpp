// Preprocessing that reproduces omsf2.data.io (DICOM grayscale path) and omsf2.data.preprocess.
//
// Every step mirrors the Python operation for operation, in the same precision: the display
// transform (rescale, LINEAR window or min-max, MONOCHROME1 inversion) in double, then float32;
// the resize as Pillow's triangle filter with taps computed in double, stored as float32 and
// accumulated in float32 in the same tap order and pass order as preprocess._resample; the
// letterbox geometry and normalisation as preprocess.letterbox_geometry / preprocess.preprocess.
// Compile with -ffp-contract=off so that no multiply-add is fused (numpy does not fuse either).
#include "omsf2_preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace omsf2 {

namespace {

struct Taps {
  int k = 0;      // taps per output sample
  int n_out = 0;  // output samples
  std::vector<int> index;     // (k, n_out) row-major
  std::vector<float> weight;  // (k, n_out) row-major
};

// preprocess._taps: Pillow's ImagingResample triangle filter with half-pixel centres.
Taps make_taps(int n_in, int n_out) {
  const double scale = static_cast<double>(n_in) / n_out;
  const double support = std::max(scale, 1.0);
  const int n_taps = static_cast<int>(std::ceil(2.0 * support)) + 1;
  std::vector<double> w(static_cast<size_t>(n_taps) * n_out);
  std::vector<long> idx(static_cast<size_t>(n_taps) * n_out);
  std::vector<double> sums(n_out, 0.0);
  for (int i = 0; i < n_out; ++i) {
    const double center = (i + 0.5) * scale;
    const long first = static_cast<long>(std::floor(center - support - 0.5)) + 1;
    for (int t = 0; t < n_taps; ++t) {
      const long j = first + t;
      double v = std::max(0.0, 1.0 - std::abs(static_cast<double>(j) + 0.5 - center) / support);
      if (j < 0 || j >= n_in) v = 0.0;
      w[static_cast<size_t>(t) * n_out + i] = v;
      idx[static_cast<size_t>(t) * n_out + i] = j;
    }
  }
  for (int t = 0; t < n_taps; ++t)  // numpy's axis-0 sum adds the rows in order
    for (int i = 0; i < n_out; ++i) sums[i] += w[static_cast<size_t>(t) * n_out + i];
  Taps out;
  out.n_out = n_out;
  for (int t = 0; t < n_taps; ++t) {
    bool used = false;
    for (int i = 0; i < n_out; ++i) {
      double& v = w[static_cast<size_t>(t) * n_out + i];
      v /= sums[i];
      used = used || v != 0.0;
    }
    if (!used) continue;
    for (int i = 0; i < n_out; ++i) {
      const long j = idx[static_cast<size_t>(t) * n_out + i];
      out.index.push_back(static_cast<int>(std::clamp<long>(j, 0, n_in - 1)));
      out.weight.push_back(static_cast<float>(w[static_cast<size_t>(t) * n_out + i]));
    }
    ++out.k;
  }
  return out;
}

// preprocess._resample: W @ img (axis 0) or img @ W.T (axis 1), as a loop of gathers and float32 multiply-adds.
Plane resample(const Plane& img, const Taps& taps, int axis) {
  Plane out;
  out.h = axis == 0 ? taps.n_out : img.h;
  out.w = axis == 0 ? img.w : taps.n_out;
  out.v.assign(static_cast<size_t>(out.h) * out.w, 0.0f);
  for (int t = 0; t < taps.k; ++t) {
    const int* ix = &taps.index[static_cast<size_t>(t) * taps.n_out];
    const float* wt = &taps.weight[static_cast<size_t>(t) * taps.n_out];
    for (int y = 0; y < out.h; ++y) {
      float* o = &out.v[static_cast<size_t>(y) * out.w];
      for (int x = 0; x < out.w; ++x) {
        const float src = axis == 0 ? img.at(ix[y], x) : img.at(y, ix[x]);
        const float prod = src * (axis == 0 ? wt[y] : wt[x]);
        o[x] = t == 0 ? prod : o[x] + prod;
      }
    }
  }
  return out;
}

}  // namespace

Plane resize(const Plane& img, int out_h, int out_w) {
  if (img.h < 1 || img.w < 1 || out_h < 1 || out_w < 1) throw std::invalid_argument("resize: sizes must be positive");
  if (img.h == out_h && img.w == out_w) return img;
  if (img.h == out_h) return resample(img, make_taps(img.w, out_w), 1);
  if (img.w == out_w) return resample(img, make_taps(img.h, out_h), 0);
  const Taps ty = make_taps(img.h, out_h);
  const Taps tx = make_taps(img.w, out_w);
  // Run first the pass that leaves less work for the second one (the same test as Python).
  const long long rows_first = 1LL * ty.k * out_h * img.w + 1LL * tx.k * out_h * out_w;
  const long long cols_first = 1LL * tx.k * img.h * out_w + 1LL * ty.k * out_h * out_w;
  if (rows_first <= cols_first) return resample(resample(img, ty, 0), tx, 1);
  return resample(resample(img, tx, 1), ty, 0);
}

Letterbox letterbox_geometry(int h, int w, const Spec& spec) {
  if (!spec.letterbox) return {0, 0, spec.height, spec.width};
  const double scale = std::min(static_cast<double>(spec.height) / h, static_cast<double>(spec.width) / w);
  const int new_h = std::min(spec.height, std::max(1, static_cast<int>(std::floor(h * scale + 0.5))));
  const int new_w = std::min(spec.width, std::max(1, static_cast<int>(std::floor(w * scale + 0.5))));
  return {(spec.height - new_h) / 2, (spec.width - new_w) / 2, new_h, new_w};
}

namespace {

void check_image(const Image& im) {
  if (im.width < 8 || im.height < 8) throw std::invalid_argument("image must be at least 8x8 pixels");
  if (im.bits_allocated != 8 && im.bits_allocated != 16) throw std::invalid_argument("bits_allocated must be 8 or 16");
  if (im.bits_stored < 1 || im.bits_stored > im.bits_allocated)
    throw std::invalid_argument("bits_stored must be in 1..bits_allocated");
  if (im.monochrome1 != 0 && im.monochrome1 != 1) throw std::invalid_argument("invalid photometric interpretation");
  if (!std::isfinite(im.slope) || !std::isfinite(im.intercept)) throw std::invalid_argument("rescale is not finite");
  if (!im.pixels) throw std::invalid_argument("pixels must not be NULL");
}

// Bytes from one row to the next, once the buffer is known to hold every row (checked without overflow).
size_t checked_stride(const Image& im) {
  const size_t row = static_cast<size_t>(im.width) * static_cast<size_t>(im.bits_allocated / 8);
  const size_t stride = im.row_stride ? im.row_stride : row;
  if (stride < row)
    throw std::invalid_argument("row_stride " + std::to_string(stride) + " is shorter than a row (" +
                                std::to_string(row) + " bytes)");
  const size_t rows_before_last = static_cast<size_t>(im.height) - 1;
  const bool fits = im.pixels_len >= row && (im.pixels_len - row) / stride >= rows_before_last;
  if (!fits) {
    const long double need = static_cast<long double>(rows_before_last) * stride + row;
    throw std::invalid_argument("pixel buffer holds " + std::to_string(im.pixels_len) + " bytes; " +
                                std::to_string(im.width) + "x" + std::to_string(im.height) + " at " +
                                std::to_string(im.bits_allocated) + " bits needs " +
                                std::to_string(static_cast<unsigned long long>(need)));
  }
  return stride;
}

// The stored samples through the Modality LUT (rescale), in double, read row by row within the buffer.
std::vector<double> modality_values(const Image& im) {
  const size_t stride = checked_stride(im);
  const unsigned bits = static_cast<unsigned>(im.bits_stored);
  const uint32_t mask = bits >= 32 ? 0xFFFFFFFFu : ((1u << bits) - 1u);
  const uint32_t sign = 1u << (bits - 1u);
  const auto* base = static_cast<const unsigned char*>(im.pixels);
  std::vector<double> x(static_cast<size_t>(im.width) * im.height);
  for (int y = 0; y < im.height; ++y) {
    const unsigned char* row = base + static_cast<size_t>(y) * stride;
    for (int c = 0; c < im.width; ++c) {
      uint32_t s = 0;
      if (im.bits_allocated == 8) {
        s = row[c];
      } else {
        uint16_t v;
        std::memcpy(&v, row + 2 * static_cast<size_t>(c), 2);  // no alignment is assumed
        s = v;
      }
      s &= mask;
      const double value = im.pixel_signed && (s & sign) ? static_cast<double>(s) - static_cast<double>(mask) - 1.0
                                                          : static_cast<double>(s);
      x[static_cast<size_t>(y) * im.width + c] = value * im.slope + im.intercept;
    }
  }
  return x;
}

}  // namespace

// io._dicom_gray + io._apply_window (LINEAR, LINEAR_EXACT, SIGMOID) / io._minmax + read_image's clip,
// in double, then float32.
Plane to_unit_range(const Image& im) {
  check_image(im);
  const size_t n = static_cast<size_t>(im.width) * im.height;
  const std::vector<double> x = modality_values(im);
  if (im.voi_function < 0 || im.voi_function > 2) throw std::invalid_argument("invalid VOI LUT function");
  const double c = im.window_center, wd = im.window_width;
  const bool window =
      im.has_window && std::isfinite(c) && std::isfinite(wd) && (im.voi_function == 0 ? wd >= 1.0 : wd > 0.0);
  std::vector<double> y(n);
  if (window && im.voi_function == 1) {  // LINEAR_EXACT
    for (size_t i = 0; i < n; ++i) y[i] = std::clamp((x[i] - c) / wd + 0.5, 0.0, 1.0);
  } else if (window && im.voi_function == 2) {  // SIGMOID, written with tanh as in Python
    for (size_t i = 0; i < n; ++i) y[i] = 0.5 * (1.0 + std::tanh(2.0 * (x[i] - c) / wd));
  } else if (window) {
    const double lo = c - 0.5 - (wd - 1.0) / 2.0, hi = c - 0.5 + (wd - 1.0) / 2.0;
    const double denom = std::max(wd - 1.0, 1e-12);
    for (size_t i = 0; i < n; ++i) {
      const double ramp = std::clamp((x[i] - (c - 0.5)) / denom + 0.5, 0.0, 1.0);
      y[i] = x[i] <= lo ? 0.0 : (x[i] > hi ? 1.0 : ramp);
    }
  } else {
    const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
    const double lo = *mn, hi = *mx;
    for (size_t i = 0; i < n; ++i) y[i] = hi > lo ? (x[i] - lo) / (hi - lo) : 0.0;
  }
  Plane out;
  out.h = im.height;
  out.w = im.width;
  out.v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double v = im.monochrome1 ? 1.0 - y[i] : y[i];
    out.v[i] = static_cast<float>(std::clamp(v, 0.0, 1.0));
  }
  return out;
}

Letterbox preprocess(const Plane& img, const Spec& spec, float* out) {
  const Letterbox box = letterbox_geometry(img.h, img.w, spec);
  const Plane resized = resize(img, box.new_h, box.new_w);
  const size_t hw = static_cast<size_t>(spec.height) * spec.width;
  std::vector<float> canvas(hw, spec.pad_value);
  for (int y = 0; y < box.new_h; ++y)
    for (int x = 0; x < box.new_w; ++x)
      canvas[static_cast<size_t>(y + box.top) * spec.width + x + box.left] = resized.at(y, x);
  for (int ch = 0; ch < spec.channels; ++ch) {
    const float m = spec.mean[ch], s = spec.std[ch];
    for (size_t i = 0; i < hw; ++i) out[ch * hw + i] = (canvas[i] - m) / s;
  }
  return box;
}

Plane unletterbox(const Plane& heatmap, int h, int w, const Spec& spec) {
  const Letterbox box = letterbox_geometry(h, w, spec);
  const Plane full = resize(heatmap, spec.height, spec.width);
  Plane crop;
  crop.h = box.new_h;
  crop.w = box.new_w;
  crop.v.resize(static_cast<size_t>(crop.h) * crop.w);
  for (int y = 0; y < crop.h; ++y)
    for (int x = 0; x < crop.w; ++x) crop.v[static_cast<size_t>(y) * crop.w + x] = full.at(y + box.top, x + box.left);
  return resize(crop, h, w);
}

}  // namespace omsf2
