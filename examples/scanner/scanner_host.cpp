// scanner_host: an example scanner-side host of the omsf2 C runtime (people copy it: it checks
// everything). It verifies a bundle, reads radiographs, refuses what `omsf2 predict` refuses with the
// same reasons, and prints one result block per image: the stage, the class probabilities and the
// heat map's peak.
//
//   scanner_host [OPTIONS] BUNDLE IMAGE.dcm...       (built with DCMTK: DICOM files, one block each)
//   scanner_host [OPTIONS] BUNDLE --raw FILE WIDTH HEIGHT BITS_STORED [RAW OPTIONS]
//
// OPTIONS: --backend auto|openvino|openvino-int8|tensorrt, --threads N (CPU inference threads, 0:
// OpenVINO's default), --any-modality (skip the Modality rule), --allow-missing body-part|view (an
// image without that attribute passes the gating; repeat), --dump-input OUT.f32
// (the preprocessed model input of the one image), --expect-sha256 DIGEST (run only the bundle whose
// manifest has this sha256), --trust PUBKEY.pem (run only bundles signed by this Ed25519 key; repeat;
// needs a library built with OpenSSL), --help.
// RAW OPTIONS: --mono1, --signed, --rescale SLOPE INTERCEPT, --window CENTER WIDTH,
// --voi-function LINEAR|LINEAR_EXACT|SIGMOID. A raw file holds little-endian uint16 samples (uint8
// when BITS_STORED <= 8), row by row, nothing else.
//
// DICOM input mirrors omsf2.data.io and omsf2 predict: the file must be DICOM (the "DICM" preamble)
// and pass the clinical input gating the library shares with Python (omsf2_runtime_check_input:
// Modality, BodyPartExamined and ViewPosition among what the bundle accepts, MONOCHROME1/MONOCHROME2
// with one sample per pixel, 8 or 16 bits allocated; the reason word for word as omsf2 predict gives
// it), be single-frame, and hold pixel data as long as Rows x Columns x BitsAllocated / 8;
// compressed pixel data is decoded when DCMTK can (RLE, JPEG, JPEG-LS). This host refuses, where
// `omsf2 predict` would convert or apply them, colour images (RGB, YBR, palette), 32-bit samples and
// Modality or VOI LUT sequences: the C runtime takes gray samples and a window only.
//
// Every argument is validated (integers and numbers parsed whole with std::from_chars, their ranges
// checked); every refusal is one line on stderr. The host adopts its user's locale, as a scanner
// console would; neither it nor the library reads or writes a number through the locale.
//
// Exit codes: 0 every image predicted; 1 a bad argument, or an image refused or unreadable (the
// others are still predicted); 2 the bundle refused (or a libomsf2_runtime of another ABI version);
// 3 inference unavailable (a library built without OpenVINO or TensorRT, or no backend can run the
// bundle here); 4 inference failed.
#include <cerrno>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "omsf2_runtime.h"

#ifdef OMSF2_WITH_DCMTK
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>
#endif

namespace {

enum Exit { kOk = 0, kInput = 1, kBundle = 2, kNoInference = 3, kInference = 4 };

// A refusal: the one line to print and the exit code it leads to.
struct Refusal {
  int code;
  std::string message;
};

[[noreturn]] void refuse(const std::string& message, int code = kInput) { throw Refusal{code, message}; }

// A number in fixed notation, never through the locale (std::to_chars).
std::string fixed(double v, int digits) {
  char buf[400];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, digits);
  return r.ec == std::errc() ? std::string(buf, r.ptr) : std::string("?");
}

const char* kUsage =
    "usage: scanner_host [OPTIONS] BUNDLE IMAGE.dcm...\n"
    "       scanner_host [OPTIONS] BUNDLE --raw FILE WIDTH HEIGHT BITS_STORED [--mono1] [--signed]\n"
    "                    [--rescale SLOPE INTERCEPT] [--window CENTER WIDTH]\n"
    "                    [--voi-function LINEAR|LINEAR_EXACT|SIGMOID]\n"
    "options: --backend auto|openvino|openvino-int8|tensorrt  --threads N  --any-modality\n"
    "         --allow-missing body-part|view  --dump-input OUT.f32  --expect-sha256 DIGEST  --trust PUBKEY.pem  --help\n"
    "exit codes: 0 predicted, 1 bad argument or image, 2 bundle (or library) refused,\n"
    "            3 inference unavailable, 4 inference failed\n";

// ------------------------------------------------------------------------------------- arguments

struct Raw {
  std::string path;
  int width = 0, height = 0, bits = 0;
};

struct Options {
  std::string bundle, backend = "auto", dump, expect_sha256;
  std::vector<std::string> trust;  // PEM public keys the bundle must be signed by one of
  int threads = 0;
  uint32_t gate_flags = 0;  // OMSF2_GATE_*: --any-modality, --allow-missing
  std::vector<std::string> dicoms;
  bool has_raw = false;
  Raw raw;
  omsf2_image image{};  // the raw image's display attributes
  bool window_given = false, raw_option_given = false;
};

long parse_int(std::string_view text, long lo, long hi, const char* what) {
  long v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size() || v < lo || v > hi)
    refuse(std::string(what) + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" +
           std::string(text) + "'");
  return v;
}

double parse_number(std::string_view text, const char* what) {
  double v = 0.0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size() || !std::isfinite(v))
    refuse(std::string(what) + " must be a finite number (like 2048 or -0.5), got '" + std::string(text) + "'");
  return v;
}

omsf2_voi_function parse_voi(std::string_view f) {
  if (f == "LINEAR") return OMSF2_VOI_LINEAR;
  if (f == "LINEAR_EXACT") return OMSF2_VOI_LINEAR_EXACT;
  if (f == "SIGMOID") return OMSF2_VOI_SIGMOID;
  refuse("--voi-function must be LINEAR, LINEAR_EXACT or SIGMOID, got '" + std::string(f) + "'");
}

class ArgReader {
 public:
  ArgReader(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool done() const { return i_ >= argc_; }
  std::string_view next() { return argv_[i_++]; }
  // The `n` values an option takes, or a refusal naming them.
  std::vector<std::string_view> values(std::string_view option, int n, const char* names) {
    if (i_ + n > argc_) refuse(std::string(option) + " needs " + names);
    std::vector<std::string_view> out(argv_ + i_, argv_ + i_ + n);
    i_ += n;
    return out;
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 1;
};

bool parse_raw_option(std::string_view a, ArgReader& args, Options& o) {
  if (a == "--raw") {
    const auto v = args.values(a, 4, "FILE WIDTH HEIGHT BITS_STORED");
    o.has_raw = true;
    o.raw = {std::string(v[0]), int(parse_int(v[1], 8, 65535, "WIDTH")), int(parse_int(v[2], 8, 65535, "HEIGHT")),
             int(parse_int(v[3], 1, 16, "BITS_STORED"))};
  } else if (a == "--mono1") {
    o.image.photometric = OMSF2_MONOCHROME1;
  } else if (a == "--signed") {
    o.image.pixel_signed = 1;
  } else if (a == "--rescale") {
    const auto v = args.values(a, 2, "SLOPE INTERCEPT");
    o.image.rescale_slope = parse_number(v[0], "--rescale SLOPE");
    o.image.rescale_intercept = parse_number(v[1], "--rescale INTERCEPT");
  } else if (a == "--window") {
    const auto v = args.values(a, 2, "CENTER WIDTH");
    o.image.has_window = 1, o.window_given = true;
    o.image.window_center = parse_number(v[0], "--window CENTER");
    o.image.window_width = parse_number(v[1], "--window WIDTH");
  } else if (a == "--voi-function") {
    o.image.voi_function = parse_voi(args.values(a, 1, "LINEAR, LINEAR_EXACT or SIGMOID")[0]);
  } else {
    return false;
  }
  o.raw_option_given = o.raw_option_given || a != "--raw";
  return true;
}

bool parse_option(std::string_view a, ArgReader& args, Options& o) {
  if (a == "--backend") {
    o.backend = std::string(args.values(a, 1, "a backend name")[0]);
  } else if (a == "--threads") {
    o.threads = int(parse_int(args.values(a, 1, "a thread count")[0], 0, 1024, "--threads"));
  } else if (a == "--any-modality") {
    o.gate_flags |= OMSF2_GATE_ANY_MODALITY;
  } else if (a == "--allow-missing") {
    const std::string_view what = args.values(a, 1, "body-part or view")[0];
    if (what == "body-part") {
      o.gate_flags |= OMSF2_GATE_ALLOW_MISSING_BODY_PART;
    } else if (what == "view") {
      o.gate_flags |= OMSF2_GATE_ALLOW_MISSING_VIEW;
    } else {
      refuse("--allow-missing takes body-part or view, got '" + std::string(what) + "'");
    }
  } else if (a == "--dump-input") {
    o.dump = std::string(args.values(a, 1, "OUT.f32")[0]);
  } else if (a == "--expect-sha256") {
    o.expect_sha256 = std::string(args.values(a, 1, "a manifest sha256")[0]);
  } else if (a == "--trust") {
    o.trust.emplace_back(args.values(a, 1, "PUBKEY.pem")[0]);
  } else {
    return parse_raw_option(a, args, o);
  }
  return true;
}

// What a window means is checked once every option is read (--voi-function may follow --window).
void check_options(const Options& o) {
  if (o.bundle.empty()) refuse("no BUNDLE given (scanner_host --help)");
  if (!o.has_raw && o.dicoms.empty()) refuse("no image given: pass DICOM files or --raw (scanner_host --help)");
  if (o.has_raw && !o.dicoms.empty()) refuse("give DICOM files or --raw, not both");
  // PS3.3 C.11.2.1.2: LINEAR needs a width of at least 1, LINEAR_EXACT and SIGMOID a positive one.
  const bool linear = o.image.voi_function == OMSF2_VOI_LINEAR;
  const double w = o.image.window_width;
  if (o.window_given && !(linear ? w >= 1.0 : w > 0.0))
    refuse(std::string("--window WIDTH must be ") + (linear ? ">= 1 for LINEAR" : "> 0") + ", got " + fixed(w, 3));
  if (!o.dump.empty() && o.dicoms.size() + (o.has_raw ? 1 : 0) != 1) refuse("--dump-input takes exactly one image");
  if (!o.has_raw && o.raw_option_given)
    refuse("--mono1, --signed, --rescale, --window and --voi-function describe a --raw image "
           "(a DICOM describes itself)");
}

// Returns false when --help was asked for.
bool parse_args(int argc, char** argv, Options& o) {
  o.image.photometric = OMSF2_MONOCHROME2;
  o.image.rescale_slope = 1.0;
  ArgReader args(argc, argv);
  bool options_done = false;
  while (!args.done()) {
    const std::string_view a = args.next();
    if (!options_done && (a == "--help" || a == "-h")) return false;
    if (!options_done && a == "--") {
      options_done = true;
    } else if (!options_done && a.size() > 1 && a[0] == '-') {
      if (!parse_option(a, args, o)) refuse("unknown option '" + std::string(a) + "' (scanner_host --help)");
    } else if (o.bundle.empty()) {
      o.bundle = std::string(a);
    } else {
      o.dicoms.emplace_back(a);
    }
  }
  check_options(o);
  return true;
}

// ------------------------------------------------------------------------------------- images

// An image ready for the runtime, with whatever owns its pixels.
struct Input {
  std::string source;
  omsf2_image image{};
  std::vector<uint8_t> bytes;
#ifdef OMSF2_WITH_DCMTK
  std::unique_ptr<DcmFileFormat> dicom;
#endif
};

Input read_raw(const Options& o) {
  Input in;
  in.source = o.raw.path;
  in.image = o.image;
  in.image.width = o.raw.width, in.image.height = o.raw.height, in.image.bits_stored = o.raw.bits;
  in.image.bits_allocated = o.raw.bits <= 8 ? 8 : 16;
  std::ifstream f(o.raw.path, std::ios::binary);
  if (!f) refuse("cannot read raw file '" + o.raw.path + "': " + std::strerror(errno));
  in.bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  const size_t need = size_t(o.raw.width) * size_t(o.raw.height) * size_t(in.image.bits_allocated / 8);
  if (in.bytes.size() != need)
    refuse("'" + o.raw.path + "' holds " + std::to_string(in.bytes.size()) + " bytes; " + std::to_string(o.raw.width) +
           "x" + std::to_string(o.raw.height) + " at " + std::to_string(in.image.bits_allocated) + " bits needs " +
           std::to_string(need));
  if (in.image.bits_allocated == 16)  // the file is little-endian; the runtime takes host order
    for (size_t k = 0; k + 1 < in.bytes.size(); k += 2) {
      const uint16_t v = uint16_t(in.bytes[k] | (in.bytes[k + 1] << 8));
      std::memcpy(&in.bytes[k], &v, 2);
    }
  in.image.pixels = in.bytes.data();
  in.image.pixels_len = in.bytes.size();
  return in;
}

#ifdef OMSF2_WITH_DCMTK
// DCMTK set up for the host's life: its decoders (RLE, JPEG, JPEG-LS) registered, and its own log
// silenced, since each of its failures comes back as a condition that this host reports in one line.
struct Codecs {
  Codecs() {
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DcmRLEDecoderRegistration::registerCodecs();
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
  }
  ~Codecs() {
    DJLSDecoderRegistration::cleanup();
    DJDecoderRegistration::cleanup();
    DcmRLEDecoderRegistration::cleanup();
  }
  Codecs(const Codecs&) = delete;
  Codecs& operator=(const Codecs&) = delete;
};

std::string text_of(DcmItem* ds, const DcmTagKey& tag) {
  OFString v;
  if (ds->findAndGetOFStringArray(tag, v).bad()) return "";
  std::string s(v.c_str());
  const size_t a = s.find_first_not_of(" \t\r\n\f\v"), b = s.find_last_not_of(" \t\r\n\f\v");
  s = a == std::string::npos ? "" : s.substr(a, b - a + 1);
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
  return s;
}

// omsf2.data.io._kind and _dcmread: the file exists, is a file, and is DICOM (the "DICM" preamble).
void check_dicom_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) refuse("no such file");
  if (std::filesystem::is_directory(path, ec)) refuse("is a directory, not an image file");
  std::ifstream f(path, std::ios::binary);
  char head[132] = {};
  if (!f || !f.read(head, sizeof head) || std::memcmp(head + 128, "DICM", 4) != 0) refuse("not a DICOM file");
}

Uint16 optional_us(DcmDataset* ds, const DcmTagKey& tag) {
  Uint16 v = 0;
  ds->findAndGetUint16(tag, v);
  return v;  // 0: absent, as omsf2_input_attributes reads it
}

// The clinical input gating (omsf2.runtime.gating, through the library): what omsf2 predict refuses,
// with its reason word for word. Read from the header, before any pixel is decoded.
void check_applicable(omsf2_runtime* rt, DcmDataset* ds, uint32_t flags) {
  const std::string modality = text_of(ds, DCM_Modality), body_part = text_of(ds, DCM_BodyPartExamined);
  const std::string view = text_of(ds, DCM_ViewPosition), photometric = text_of(ds, DCM_PhotometricInterpretation);
  const auto c = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
  const omsf2_input_attributes attrs{c(modality),
                                     c(body_part),
                                     c(view),
                                     c(photometric),
                                     optional_us(ds, DCM_SamplesPerPixel),
                                     optional_us(ds, DCM_BitsAllocated),
                                     optional_us(ds, DCM_BitsStored)};
  const omsf2_status st = omsf2_runtime_check_input(rt, &attrs, flags);
  if (st != OMSF2_OK) refuse(omsf2_last_error());
}

void check_frames_and_decode(DcmFileFormat& file, DcmDataset* ds) {
  if (!ds->tagExistsWithValue(DCM_PixelData)) refuse("DICOM has no pixel data");
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).good() && frames > 1)
    refuse("multi-frame DICOM (" + std::to_string(frames) + " frames); only single-frame images are supported");
  const E_TransferSyntax ts = file.getDataset()->getOriginalXfer();
  if (DcmXfer(ts).isEncapsulated() && ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad())
    refuse(std::string("cannot decode ") + DcmXfer(ts).getXferName() +
           " pixel data (scanner_host decodes uncompressed, RLE, JPEG and JPEG-LS)");
}

Uint16 required_us(DcmDataset* ds, const DcmTagKey& tag) {
  Uint16 v = 0;
  if (ds->findAndGetUint16(tag, v).bad()) refuse(std::string("DICOM has no valid ") + DcmTag(tag).getTagName());
  return v;
}

// Photometric interpretation, samples, size and bits: what the C runtime takes.
void read_layout(DcmDataset* ds, omsf2_image& im) {
  const std::string photometric = text_of(ds, DCM_PhotometricInterpretation);
  if (photometric != "MONOCHROME1" && photometric != "MONOCHROME2")
    refuse("unsupported photometric interpretation '" + photometric +
           "'; scanner_host reads MONOCHROME1 and MONOCHROME2 (omsf2 predict converts colour to gray)");
  Uint16 samples = 1;
  if (ds->findAndGetUint16(DCM_SamplesPerPixel, samples).good() && samples != 1)
    refuse("monochrome pixel data with " + std::to_string(samples) + " samples per pixel; expected 1");
  Uint16 rows = 0, cols = 0;
  if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad())
    refuse("DICOM has no valid Rows/Columns");
  if (rows < 8 || cols < 8)
    refuse("image is " + std::to_string(rows) + "x" + std::to_string(cols) + " pixels; at least 8x8 is needed");
  const Uint16 allocated = required_us(ds, DCM_BitsAllocated), stored = required_us(ds, DCM_BitsStored);
  if (allocated != 8 && allocated != 16)
    refuse("BitsAllocated " + std::to_string(allocated) + " is not supported by scanner_host (8 or 16)");
  if (stored < 1 || stored > allocated)
    refuse("BitsStored " + std::to_string(stored) + " does not fit BitsAllocated " + std::to_string(allocated));
  Uint16 representation = 0;
  ds->findAndGetUint16(DCM_PixelRepresentation, representation);
  im.width = cols, im.height = rows, im.bits_allocated = allocated, im.bits_stored = stored;
  im.pixel_signed = representation == 1;
  im.photometric = photometric == "MONOCHROME1" ? OMSF2_MONOCHROME1 : OMSF2_MONOCHROME2;
}

double first_number(DcmDataset* ds, const DcmTagKey& tag, bool& found) {
  Float64 v = 0.0;
  found = ds->findAndGetFloat64(tag, v, 0).good();  // DCMTK reads DS values without the locale
  return v;
}

// Modality LUT (rescale) and window, as omsf2.data.io._dicom_gray applies them.
void read_transforms(DcmDataset* ds, omsf2_image& im) {
  if (ds->tagExistsWithValue(DCM_ModalityLUTSequence))
    refuse("Modality LUT Sequence is not supported by scanner_host (omsf2 predict applies it)");
  if (ds->tagExistsWithValue(DCM_VOILUTSequence))
    refuse("VOI LUT Sequence is not supported by scanner_host (omsf2 predict applies it)");
  im.rescale_slope = 1.0, im.rescale_intercept = 0.0;
  if (ds->tagExists(DCM_RescaleSlope) && ds->tagExists(DCM_RescaleIntercept)) {  // pydicom: both or neither
    bool slope = false, intercept = false;
    im.rescale_slope = first_number(ds, DCM_RescaleSlope, slope);
    im.rescale_intercept = first_number(ds, DCM_RescaleIntercept, intercept);
    if (!slope || !intercept || !std::isfinite(im.rescale_slope) || !std::isfinite(im.rescale_intercept))
      refuse("invalid DICOM value transforms (unreadable Rescale Slope/Intercept)");
  }
  bool center = false, width = false;
  im.window_center = first_number(ds, DCM_WindowCenter, center);
  im.window_width = first_number(ds, DCM_WindowWidth, width);
  im.has_window = center && width;  // an unreadable window is min-max normalised, as in Python
  const std::string f = text_of(ds, DCM_VOILUTFunction);  // unknown: LINEAR, as in Python
  im.voi_function = f == "LINEAR_EXACT" ? OMSF2_VOI_LINEAR_EXACT
                    : f == "SIGMOID"    ? OMSF2_VOI_SIGMOID
                                        : OMSF2_VOI_LINEAR;
}

// The decoded pixel data, its real length handed to the runtime (which checks every read against it).
void read_pixels(DcmDataset* ds, omsf2_image& im) {
  DcmElement* elem = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, elem).bad() || !elem) refuse("DICOM has no pixel data");
  const size_t need = size_t(im.width) * size_t(im.height) * size_t(im.bits_allocated / 8);
  const size_t have = elem->getLength();
  if (have < need)
    refuse("pixel data holds " + std::to_string(have) + " bytes; " + std::to_string(im.height) + "x" +
           std::to_string(im.width) + " at " + std::to_string(im.bits_allocated) + " bits needs " +
           std::to_string(need));
  if (im.bits_allocated == 16) {
    Uint16* px = nullptr;
    if (elem->getUint16Array(px).bad() || !px) refuse("cannot read the pixel data");
    im.pixels = px;
  } else {
    Uint8* px = nullptr;
    if (elem->getUint8Array(px).bad() || !px) refuse("cannot read the pixel data");
    im.pixels = px;
  }
  im.pixels_len = have;
  im.row_stride = 0;
}

Input read_dicom(omsf2_runtime* rt, const std::string& path, uint32_t gate_flags) {
  check_dicom_file(path);
  Input in;
  in.source = path;
  in.dicom = std::make_unique<DcmFileFormat>();
  OFCondition st = in.dicom->loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_fileOnly);
  if (st.good()) st = in.dicom->loadAllDataIntoMemory();  // large values too: the file is read once, now
  if (st.bad()) refuse(std::string("corrupt or truncated DICOM file (DCMTK: ") + st.text() + ")");
  DcmDataset* ds = in.dicom->getDataset();
  check_applicable(rt, ds, gate_flags);
  check_frames_and_decode(*in.dicom, ds);
  read_layout(ds, in.image);
  read_transforms(ds, in.image);
  read_pixels(ds, in.image);
  return in;
}
#else
Input read_dicom(omsf2_runtime*, const std::string&, uint32_t) {
  refuse("this scanner_host was built without DCMTK; use --raw (or install libdcmtk-dev and rebuild)");
}
#endif

// ------------------------------------------------------------------------------------- output

void dump_input(omsf2_runtime* rt, const Input& in, const std::string& path) {
  omsf2_preprocess_spec spec;
  omsf2_runtime_spec(rt, &spec);
  std::vector<float> input(size_t(spec.channels) * spec.height * spec.width);
  omsf2_letterbox box;
  if (omsf2_preprocess(&spec, &in.image, input.data(), input.size(), &box) != OMSF2_OK) refuse(omsf2_last_error());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(input.data()), std::streamsize(input.size() * sizeof(float)));
  if (!f) refuse("cannot write '" + path + "'");
  std::printf("  input %s: image at rows %d..%d, columns %d..%d of the model input\n", path.c_str(), box.top,
              box.top + box.new_height - 1, box.left, box.left + box.new_width - 1);
}

struct ResultDeleter {
  void operator()(omsf2_result* r) const { omsf2_result_destroy(r); }
};

void print_result(omsf2_runtime* rt, const omsf2_result* res) {
  const float* p = omsf2_result_probabilities(res);
  std::printf("  stage: %s\n", omsf2_runtime_class_name(rt, omsf2_result_label(res)));
  for (int k = 0; k < omsf2_runtime_num_classes(rt); ++k)
    std::printf("  %-24s %s\n", omsf2_runtime_class_name(rt, k), fixed(p[k], 6).c_str());
  int32_t h = 0, w = 0;
  const float* hm = omsf2_result_heatmap(res, &h, &w);
  size_t best = 0;
  for (size_t i = 1; i < size_t(h) * size_t(w); ++i)
    if (hm[i] > hm[best]) best = i;
  std::printf("  heat map %dx%d, peak at row %zu, column %zu\n", h, w, best / size_t(w), best % size_t(w));
}

void predict(omsf2_runtime* rt, const Input& in, const std::string& dump) {
  std::printf("%s\n", in.source.c_str());
  if (!dump.empty()) dump_input(rt, in, dump);
  omsf2_result* raw = nullptr;
  const omsf2_status st = omsf2_runtime_run(rt, &in.image, &raw);
  const std::unique_ptr<omsf2_result, ResultDeleter> res(raw);
  if (st == OMSF2_ERR_UNSUPPORTED) refuse(std::string("inference unavailable: ") + omsf2_last_error(), kNoInference);
  if (st == OMSF2_ERR_INFERENCE || st == OMSF2_ERR_INTERNAL) refuse(omsf2_last_error(), kInference);
  if (st != OMSF2_OK) refuse(omsf2_last_error());
  print_result(rt, res.get());
}

// ------------------------------------------------------------------------------------- main

struct RuntimeDeleter {
  void operator()(omsf2_runtime* r) const { omsf2_runtime_destroy(r); }
};
using Runtime = std::unique_ptr<omsf2_runtime, RuntimeDeleter>;

Runtime open_runtime(const Options& o) {
  if (omsf2_abi_version() != OMSF2_RUNTIME_ABI_VERSION)
    refuse("libomsf2_runtime has ABI " + std::to_string(omsf2_abi_version()) + "; this host was built for " +
               std::to_string(OMSF2_RUNTIME_ABI_VERSION),
           kBundle);
  if (!o.trust.empty() && !omsf2_has_signatures())
    refuse("--trust needs a libomsf2_runtime built with OpenSSL (libssl-dev); pin --expect-sha256 instead", kBundle);
  const omsf2_runtime_options options{o.backend.c_str(), o.threads};
  std::vector<const char*> keys;
  for (const std::string& k : o.trust) keys.push_back(k.c_str());
  const omsf2_trust trust{o.expect_sha256.empty() ? nullptr : o.expect_sha256.c_str(), keys.data(), keys.size()};
  omsf2_runtime* raw = nullptr;
  const omsf2_status st = omsf2_runtime_create_trusted(o.bundle.c_str(), &options, &trust, &raw);
  Runtime rt(raw);
  if (st == OMSF2_ERR_UNSUPPORTED) refuse(std::string("inference unavailable: ") + omsf2_last_error(), kNoInference);
  if (st == OMSF2_ERR_INVALID_ARGUMENT) refuse(omsf2_last_error());
  if (st != OMSF2_OK) refuse(omsf2_last_error(), kBundle);
  omsf2_preprocess_spec spec;
  omsf2_runtime_spec(rt.get(), &spec);
  const std::string backend = omsf2_runtime_backend(rt.get());
  std::printf("bundle %s: %d classes, input %dx%dx%d, task %s, backend %s\n", o.bundle.c_str(),
              omsf2_runtime_num_classes(rt.get()), spec.channels, spec.height, spec.width, omsf2_runtime_task(rt.get()),
              backend.empty() ? "none" : backend.c_str());
  const std::string signer = omsf2_runtime_signer(rt.get());
  std::printf("bundle sha256 %s, %s%s\n", omsf2_runtime_digest(rt.get()),
              signer.empty() ? "unsigned" : "signed by key ", signer.substr(0, 16).c_str());
  return rt;
}

void report(const Refusal& r, const std::string* source) {
  std::fflush(stdout);  // the blocks already printed come first
  std::fprintf(stderr, "error: %s%s%s\n", source ? source->c_str() : "", source ? ": " : "", r.message.c_str());
}

// One DICOM: read, gate and predict it; a refusal is printed and its exit code returned.
int run_dicom(omsf2_runtime* rt, const Options& o, const std::string& path) {
  try {
    predict(rt, read_dicom(rt, path, o.gate_flags), o.dump);
    return kOk;
  } catch (const Refusal& r) {
    report(r, &path);
    return r.code;
  }
}

int run(const Options& o) {
#ifdef OMSF2_WITH_DCMTK
  const Codecs codecs;
#endif
  if (o.has_raw) {  // a raw image is an argument: checked before the bundle is opened
    const Input in = read_raw(o);
    const Runtime rt = open_runtime(o);
    predict(rt.get(), in, o.dump);
    return kOk;
  }
  const Runtime rt = open_runtime(o);
  int code = kOk;
  for (const std::string& path : o.dicoms) {
    const int c = run_dicom(rt.get(), o, path);
    if (code == kOk) code = c;  // the first failure decides; every file is still tried
  }
  return code;
}

std::string built_with() {
  std::string parts;
  if (omsf2_has_openvino()) parts += " OpenVINO";
  if (omsf2_has_tensorrt()) parts += " TensorRT";
#ifdef OMSF2_WITH_DCMTK
  parts += " DCMTK";
#endif
  return "built with:" + (parts.empty() ? std::string(" no inference backend and no DICOM reader") : parts);
}

}  // namespace

int main(int argc, char** argv) {
  // A scanner console runs in its user's locale; nothing below may depend on it.
  std::setlocale(LC_ALL, "");
  try {
    Options o;
    if (!parse_args(argc, argv, o)) {
      std::printf("%s%s\n", kUsage, built_with().c_str());
      return kOk;
    }
    return run(o);
  } catch (const Refusal& r) {
    report(r, nullptr);
    return r.code;
  } catch (const std::exception& e) {  // out of memory and the like: still one line, never a crash
    std::fprintf(stderr, "error: %s\n", e.what());
    return kInput;
  }
}
