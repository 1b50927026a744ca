// C++ core of the omsf2 runtime: preprocessing identical to omsf2.data.io + omsf2.data.preprocess.
#ifndef OMSF2_PREPROCESS_HPP
#define OMSF2_PREPROCESS_HPP

#include <cstddef>
#include <cstdint>
#include <vector>

namespace omsf2 {

// A float32 image, row-major.
struct Plane {
  int h = 0, w = 0;
  std::vector<float> v;
  float at(int y, int x) const { return v[static_cast<size_t>(y) * w + x]; }
};

// A stored grayscale buffer and its display attributes (see omsf2_image in omsf2_runtime.h).
struct Image {
  const void* pixels = nullptr;
  size_t pixels_len = 0;  // bytes readable at pixels
  size_t row_stride = 0;  // bytes from one row to the next; 0: width * bits_allocated / 8
  int width = 0, height = 0, bits_allocated = 16, bits_stored = 16;
  bool pixel_signed = false;  // two's complement in bits_stored bits (Pixel Representation 1)
  int monochrome1 = 0;
  double slope = 1.0, intercept = 0.0;
  bool has_window = false;
  double window_center = 0.0, window_width = 0.0;
  int voi_function = 0;  // 0 LINEAR, 1 LINEAR_EXACT, 2 SIGMOID
};

struct Spec {
  int height = 224, width = 224, channels = 1;
  bool letterbox = true;
  float pad_value = 0.0f;
  float mean[3] = {0.5f, 0.5f, 0.5f};
  float std[3] = {0.25f, 0.25f, 0.25f};
};

struct Letterbox {
  int top = 0, left = 0, new_h = 0, new_w = 0;
};

// Antialiased (Pillow BILINEAR) resize, as omsf2.data.preprocess.resize.
Plane resize(const Plane& img, int out_h, int out_w);
// omsf2.data.preprocess.letterbox_geometry.
Letterbox letterbox_geometry(int h, int w, const Spec& spec);
// Rescale, window (or min-max), MONOCHROME1 inversion and clip to [0, 1]: omsf2.data.io's DICOM path.
// Every read is bounds-checked against pixels_len: a short buffer is std::invalid_argument.
Plane to_unit_range(const Image& image);
// omsf2.data.preprocess.preprocess into out[channels * height * width]; returns the letterbox.
Letterbox preprocess(const Plane& img, const Spec& spec, float* out);
// omsf2.data.preprocess.unletterbox.
Plane unletterbox(const Plane& heatmap, int h, int w, const Spec& spec);

}  // namespace omsf2

#endif  // OMSF2_PREPROCESS_HPP
