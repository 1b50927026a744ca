// A minimal scanner-side host of the omsf2 C runtime: verify a bundle, feed it one radiograph, print
// the stage, the class probabilities and the heat map's peak.
//
//   scanner_host BUNDLE --raw FILE WIDTH HEIGHT BITS_STORED [--mono1] [--rescale SLOPE INTERCEPT]
//                [--window CENTER WIDTH] [--voi-function LINEAR|LINEAR_EXACT|SIGMOID] [--dump-input OUT.f32]
//   scanner_host BUNDLE IMAGE.dcm            (built with DCMTK: uncompressed grayscale DICOM)
//
// A raw file holds little-endian uint16 samples (uint8 when BITS_STORED <= 8), row by row. Exit codes:
// 0 predicted, 1 bad arguments or input, 2 bundle refused, 3 inference unavailable (built without
// TensorRT; the bundle was verified and the image preprocessed, see --dump-input).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "omsf2_runtime.h"

#ifdef OMSF2_WITH_DCMTK
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#endif

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: scanner_host BUNDLE --raw FILE WIDTH HEIGHT BITS_STORED [--mono1] [--rescale SLOPE INTERCEPT]\n"
               "                    [--window CENTER WIDTH] [--voi-function LINEAR|LINEAR_EXACT|SIGMOID]\n"
               "                    [--dump-input OUT.f32]\n"
               "       scanner_host BUNDLE IMAGE.dcm   (needs a build with DCMTK)\n");
  return 1;
}

struct Input {
  std::vector<uint8_t> bytes;
  omsf2_image image{};
};

bool read_raw(const char* path, Input& in) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  in.bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  const size_t need = static_cast<size_t>(in.image.width) * in.image.height * (in.image.bits_allocated / 8);
  if (in.bytes.size() != need) {
    std::fprintf(stderr, "error: '%s' holds %zu bytes; %dx%d at %d bits needs %zu\n", path, in.bytes.size(),
                 in.image.width, in.image.height, in.image.bits_allocated, need);
    return false;
  }
  in.image.pixels = in.bytes.data();
  return true;
}

#ifdef OMSF2_WITH_DCMTK
bool read_dicom(const char* path, Input& in) {
  DcmFileFormat file;
  if (file.loadFile(path).bad()) return false;
  DcmDataset* ds = file.getDataset();
  Uint16 rows = 0, cols = 0, allocated = 0, stored = 0;
  OFString photometric, voi;
  ds->findAndGetUint16(DCM_Rows, rows);
  ds->findAndGetUint16(DCM_Columns, cols);
  ds->findAndGetUint16(DCM_BitsAllocated, allocated);
  ds->findAndGetUint16(DCM_BitsStored, stored);
  ds->findAndGetOFString(DCM_PhotometricInterpretation, photometric);
  ds->findAndGetOFString(DCM_VOILUTFunction, voi);
  // DCMTK zeroes the output when a tag is absent: keep the defaults (slope 1, intercept 0) then.
  Float64 slope = 1.0, intercept = 0.0, center = 0.0, width = 0.0, value = 0.0;
  if (ds->findAndGetFloat64(DCM_RescaleSlope, value).good()) slope = value;
  if (ds->findAndGetFloat64(DCM_RescaleIntercept, value).good()) intercept = value;
  const bool window = ds->findAndGetFloat64(DCM_WindowCenter, center).good() &&
                      ds->findAndGetFloat64(DCM_WindowWidth, width).good();
  const size_t n = static_cast<size_t>(rows) * cols;
  if (allocated == 16) {
    const Uint16* px = nullptr;
    if (ds->findAndGetUint16Array(DCM_PixelData, px).bad() || !px) return false;
    in.bytes.assign(reinterpret_cast<const uint8_t*>(px), reinterpret_cast<const uint8_t*>(px) + 2 * n);
  } else {
    const Uint8* px = nullptr;
    if (ds->findAndGetUint8Array(DCM_PixelData, px).bad() || !px) return false;
    in.bytes.assign(px, px + n);
  }
  in.image = {in.bytes.data(), cols, rows, allocated, stored,
              photometric == "MONOCHROME1" ? OMSF2_MONOCHROME1 : OMSF2_MONOCHROME2, slope, intercept, window ? 1 : 0,
              center, width,
              voi == "LINEAR_EXACT" ? OMSF2_VOI_LINEAR_EXACT : voi == "SIGMOID" ? OMSF2_VOI_SIGMOID : OMSF2_VOI_LINEAR};
  return true;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const char* bundle = argv[1];
  Input in;
  in.image.photometric = OMSF2_MONOCHROME2;
  in.image.rescale_slope = 1.0;
  const char* dump = nullptr;
  const char* raw = nullptr;
  const char* dicom = nullptr;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--raw" && i + 4 < argc) {
      raw = argv[++i];
      in.image.width = std::atoi(argv[++i]);
      in.image.height = std::atoi(argv[++i]);
      in.image.bits_stored = std::atoi(argv[++i]);
      in.image.bits_allocated = in.image.bits_stored <= 8 ? 8 : 16;
    } else if (a == "--mono1") {
      in.image.photometric = OMSF2_MONOCHROME1;
    } else if (a == "--rescale" && i + 2 < argc) {
      in.image.rescale_slope = std::atof(argv[++i]);
      in.image.rescale_intercept = std::atof(argv[++i]);
    } else if (a == "--window" && i + 2 < argc) {
      in.image.has_window = 1;
      in.image.window_center = std::atof(argv[++i]);
      in.image.window_width = std::atof(argv[++i]);
    } else if (a == "--voi-function" && i + 1 < argc) {
      const std::string f = argv[++i];
      in.image.voi_function = f == "LINEAR_EXACT" ? OMSF2_VOI_LINEAR_EXACT : f == "SIGMOID" ? OMSF2_VOI_SIGMOID
                                                                                          : OMSF2_VOI_LINEAR;
    } else if (a == "--dump-input" && i + 1 < argc) {
      dump = argv[++i];
    } else if (a.size() > 4 && a.compare(a.size() - 4, 4, ".dcm") == 0) {
      dicom = argv[i];
    } else {
      return usage();
    }
  }
  if (raw && !read_raw(raw, in)) return 1;
  if (dicom) {
#ifdef OMSF2_WITH_DCMTK
    if (!read_dicom(dicom, in)) {
      std::fprintf(stderr, "error: cannot read '%s' as an uncompressed grayscale DICOM\n", dicom);
      return 1;
    }
#else
    std::fprintf(stderr, "error: this scanner_host was built without DCMTK; use --raw\n");
    return 1;
#endif
  }
  if (!raw && !dicom) return usage();

  omsf2_runtime* rt = nullptr;
  if (omsf2_runtime_create(bundle, &rt) != OMSF2_OK) {
    std::fprintf(stderr, "error: %s\n", omsf2_last_error());
    return 2;
  }
  omsf2_preprocess_spec spec;
  omsf2_runtime_spec(rt, &spec);
  std::printf("bundle %s: %d classes, input %dx%dx%d\n", bundle, omsf2_runtime_num_classes(rt), spec.channels,
              spec.height, spec.width);
  std::vector<float> input(static_cast<size_t>(spec.channels) * spec.height * spec.width);
  omsf2_letterbox box;
  if (omsf2_preprocess(&spec, &in.image, input.data(), input.size(), &box) != OMSF2_OK) {
    std::fprintf(stderr, "error: %s\n", omsf2_last_error());
    omsf2_runtime_destroy(rt);
    return 1;
  }
  std::printf("preprocessed %dx%d -> image at rows %d..%d, columns %d..%d of the input\n", in.image.width,
              in.image.height, box.top, box.top + box.new_height - 1, box.left, box.left + box.new_width - 1);
  if (dump) {
    std::ofstream(dump, std::ios::binary).write(reinterpret_cast<const char*>(input.data()),
                                                 static_cast<std::streamsize>(input.size() * sizeof(float)));
  }
  omsf2_result* res = nullptr;
  const omsf2_status st = omsf2_runtime_run(rt, &in.image, &res);
  if (st != OMSF2_OK) {
    std::fprintf(stderr, "%s: %s\n", st == OMSF2_ERR_UNSUPPORTED ? "inference unavailable" : "error",
                 omsf2_last_error());
    omsf2_runtime_destroy(rt);
    return st == OMSF2_ERR_UNSUPPORTED ? 3 : 1;
  }
  const float* p = omsf2_result_probabilities(res);
  std::printf("stage: %s\n", omsf2_runtime_class_name(rt, omsf2_result_label(res)));
  for (int k = 0; k < omsf2_runtime_num_classes(rt); ++k) std::printf("  %-24s %.4f\n", omsf2_runtime_class_name(rt, k), p[k]);
  int h = 0, w = 0;
  const float* hm = omsf2_result_heatmap(res, &h, &w);
  size_t best = 0;
  for (size_t i = 1; i < static_cast<size_t>(h) * w; ++i)
    if (hm[i] > hm[best]) best = i;
  std::printf("heat map %dx%d, peak at row %zu, column %zu\n", h, w, best / w, best % w);
  omsf2_result_destroy(res);
  omsf2_runtime_destroy(rt);
  return 0;
}
