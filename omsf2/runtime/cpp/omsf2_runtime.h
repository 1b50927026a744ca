/* omsf2_runtime.h: the C ABI a scanner or PACS host links against to run an omsf2 bundle (ABI v2).
 *
 * A runtime is created from a bundle folder: manifest.json is read by a strict JSON rule (valid
 * UTF-8, at most 32 levels deep, no duplicate keys, no NaN or Infinity, numbers read independently
 * of the host's locale) and every file's sha256 is checked, as omsf2.runtime.bundle does. It runs
 * one grayscale radiograph at a time from an 8- or 16-bit buffer and returns the stage, the class
 * probabilities (softmax for a multiclass bundle, a sigmoid per class for a multilabel one) and a
 * heat map at the buffer's resolution. The preprocessing (modality rescale, window or min-max to
 * [0, 1], MONOCHROME1 inversion, antialiased resize, letterbox, normalisation) reproduces
 * omsf2.data.io + omsf2.data.preprocess to 1e-5.
 *
 * Backends, chosen by the table the Python runtime shares (omsf2_rules_json()):
 *   "openvino"       the bundle's FP32 ONNX on the CPU through OpenVINO;
 *   "openvino-int8"  its INT8 ONNX (onnx_int8_cpu, else onnx_int8) on the CPU through OpenVINO;
 *   "tensorrt"       its engine (engine_int8, engine_fp16, engine_fp32) on a CUDA GPU, the
 *                    engine manifest checked against this TensorRT and GPU, the bundle's plugin
 *                    library (sha256-checked) loaded first;
 *   "auto"           tensorrt, then openvino: the first that this library was built with, whose
 *                    file the bundle holds and that opens here.
 * The file a backend deserialises is read once into memory, and those bytes are what was hashed.
 * A library built with neither OpenVINO nor TensorRT verifies bundles and preprocesses; there
 * omsf2_runtime_run returns OMSF2_ERR_UNSUPPORTED.
 *
 * Every create also holds manifest.json to each model file it names, as the Python runtime does:
 * the classes, the task, the preprocessing and the source checkpoint's sha256 against the ONNX's
 * omsf2.* metadata (or the engine manifest's), and the model's input and output shapes; a mismatch
 * is OMSF2_ERR_BUNDLE with one line naming the field. omsf2_runtime_create_trusted also holds the
 * bundle to a pinned manifest sha256 and, where the library was built with OpenSSL's libcrypto
 * (omsf2_has_signatures()), to Ed25519 signatures by trusted keys, before any model file is read.
 *
 * Changes from v1: omsf2_image carries its buffer's length and row stride (every read is
 * bounds-checked) and whether samples are signed; omsf2_runtime_create_with_options (backend, CPU
 * threads); omsf2_runtime_backend / _task; omsf2_activate; omsf2_check_engine_compatibility;
 * omsf2_check_json; omsf2_rules_json; omsf2_has_openvino. Grown within v2 (no struct changed):
 * omsf2_trust, omsf2_runtime_create_trusted, omsf2_runtime_digest / _signer, omsf2_has_signatures;
 * clinical input gating: OMSF2_ERR_NOT_APPLICABLE, omsf2_input_attributes, OMSF2_GATE_* flags,
 * omsf2_runtime_check_input and omsf2_check_input (the rules omsf2.runtime.gating applies, with its
 * reasons word for word; what a bundle accepts is read from its manifest's "accepts").
 * Compare omsf2_abi_version() with OMSF2_RUNTIME_ABI_VERSION before anything else and refuse a
 * library of another version.
 *
 * Errors are status codes; the message of the last failure on the calling thread is
 * omsf2_last_error(). No C++ exception crosses this interface. The free functions are
 * thread-safe; an omsf2_runtime holds one inference request, so serialise the calls on one runtime
 * (or create one per inference thread). Results are independent objects.
 */
#ifndef OMSF2_RUNTIME_H
#define OMSF2_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OMSF2_RUNTIME_ABI_VERSION 2

typedef enum omsf2_status {
  OMSF2_OK = 0,
  OMSF2_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a size or enum out of range, a short buffer, bad JSON */
  OMSF2_ERR_BUNDLE = 2,           /* not a bundle, a newer format, or a file changed/added/removed/escaping */
  OMSF2_ERR_IO = 3,               /* a file could not be read */
  OMSF2_ERR_UNSUPPORTED = 4,      /* backend not built in, no file for it, or an engine/GPU mismatch */
  OMSF2_ERR_INFERENCE = 5,        /* OpenVINO, TensorRT or CUDA failed, or the model produced non-finite values */
  OMSF2_ERR_INTERNAL = 6,         /* out of memory or a bug */
  OMSF2_ERR_NOT_APPLICABLE = 7    /* the image is not one the bundle may analyse (omsf2_runtime_check_input) */
} omsf2_status;

/* VOI LUT Function (0028,1056) of the window (PS3.3 C.11.2.1.2-3). */
typedef enum omsf2_voi_function {
  OMSF2_VOI_LINEAR = 0,
  OMSF2_VOI_LINEAR_EXACT = 1,
  OMSF2_VOI_SIGMOID = 2
} omsf2_voi_function;

typedef enum omsf2_photometric {
  OMSF2_MONOCHROME2 = 2, /* higher values are brighter */
  OMSF2_MONOCHROME1 = 1  /* higher values are darker: inverted after the window */
} omsf2_photometric;

/* One grayscale image as stored in a DICOM file (PS3.3 C.7.6.3) or by a detector. */
typedef struct omsf2_image {
  const void* pixels;         /* rows of `width` samples; uint8_t or uint16_t (host order), any alignment */
  size_t pixels_len;          /* bytes readable at `pixels`: a shorter buffer than the rows need is refused */
  size_t row_stride;          /* bytes from the start of one row to the next; 0: width * bits_allocated / 8 */
  int32_t width;              /* columns, >= 8 */
  int32_t height;             /* rows, >= 8 */
  int32_t bits_allocated;     /* 8 or 16: the sample type */
  int32_t bits_stored;        /* 1..bits_allocated; higher bits are masked off */
  int32_t pixel_signed;       /* nonzero: two's complement in bits_stored bits (Pixel Representation 1) */
  omsf2_photometric photometric;
  double rescale_slope;       /* Modality LUT: x = stored * slope + intercept (1 and 0 when absent) */
  double rescale_intercept;
  int32_t has_window;         /* nonzero: apply the window below, else min-max normalise */
  double window_center;
  double window_width;        /* LINEAR: >= 1, else > 0; an invalid window falls back to min-max, as in Python */
  omsf2_voi_function voi_function;
} omsf2_image;

/* The model input's preprocessing; a bundle's manifest.json holds it ("preprocess"). */
typedef struct omsf2_preprocess_spec {
  int32_t height;     /* model input H */
  int32_t width;      /* model input W */
  int32_t channels;   /* 1 or 3 (the gray image replicated) */
  int32_t letterbox;  /* nonzero: keep aspect and pad; zero: stretch */
  float pad_value;    /* letterbox fill, in [0, 1] image units */
  float mean[3];      /* per channel (a 1-value spec repeats it) */
  float std[3];
} omsf2_preprocess_spec;

/* Where the resized image sits inside the model input. */
typedef struct omsf2_letterbox {
  int32_t top, left, new_height, new_width;
} omsf2_letterbox;

/* How a runtime runs (omsf2_runtime_create_with_options). */
typedef struct omsf2_runtime_options {
  const char* backend; /* "auto" (or NULL), "openvino", "openvino-int8" or "tensorrt" */
  int32_t threads;     /* CPU inference threads for OpenVINO; 0: OpenVINO's default */
} omsf2_runtime_options;

/* Which bundles a runtime may open (omsf2_runtime_create_trusted); every field may be NULL / 0. */
typedef struct omsf2_trust {
  const char* expect_sha256;              /* the manifest.json sha256 (64 hex digits) the bundle must have */
  const char* const* public_key_files;    /* PEM Ed25519 public keys (omsf2 keygen's .pub) the bundle must be
                                             signed by one of; needs omsf2_has_signatures() */
  size_t num_public_keys;
} omsf2_trust;

/* The DICOM attributes the clinical input gating reads (omsf2.runtime.gating); NULL / 0 where the header
 * has none. Strings are compared trimmed and ASCII upper-cased, as DICOM code strings. */
typedef struct omsf2_input_attributes {
  const char* modality;           /* Modality (0008,0060): CR, DR, DX unless the bundle says otherwise */
  const char* body_part_examined; /* BodyPartExamined (0018,0015): CHEST unless the bundle says otherwise */
  const char* view_position;      /* ViewPosition (0018,5101): PA or AP unless the bundle lists more */
  const char* photometric;        /* PhotometricInterpretation (0028,0004): MONOCHROME1 or MONOCHROME2 */
  int32_t samples_per_pixel;      /* 1 (0: absent, read as 1) */
  int32_t bits_allocated;         /* 8 or 16 */
  int32_t bits_stored;            /* 1..bits_allocated (0: absent, read as bits_allocated) */
} omsf2_input_attributes;

/* Flags of the gating (a site's settings; the same bits as omsf2.runtime.gating.GatePolicy.flags). */
#define OMSF2_GATE_ANY_MODALITY 1u              /* skip the Modality rule (research only) */
#define OMSF2_GATE_ALLOW_MISSING_BODY_PART 2u   /* an absent BodyPartExamined passes */
#define OMSF2_GATE_ALLOW_MISSING_VIEW 4u        /* an absent ViewPosition passes */

typedef struct omsf2_runtime omsf2_runtime;
typedef struct omsf2_result omsf2_result;

/* The message of the last failure on this thread ("" if none); valid until the next call on it. */
const char* omsf2_last_error(void);
/* OMSF2_RUNTIME_ABI_VERSION of the library (check it against the header's). */
int32_t omsf2_abi_version(void);
/* Nonzero when the library was built with TensorRT (GPU) / OpenVINO (CPU) inference. */
int32_t omsf2_has_tensorrt(void);
int32_t omsf2_has_openvino(void);
/* Nonzero when the library checks Ed25519 bundle signatures (built with OpenSSL's libcrypto). */
int32_t omsf2_has_signatures(void);
/* The rules this library shares with the Python runtime, as JSON (the layout of omsf2.runtime.rules.as_dict());
 * a static string. */
const char* omsf2_rules_json(void);

/* Window / invert / clip the image to [0, 1] float32 (height * width values into `out`), exactly
 * as omsf2.data.io.read_image does for a DICOM with these attributes. */
omsf2_status omsf2_to_unit_range(const omsf2_image* image, float* out, size_t out_len);

/* The full model input: omsf2_to_unit_range, then omsf2.data.preprocess.preprocess.
 * `out` receives channels * height * width float32 values (CHW); `box` (may be NULL) the letterbox. */
omsf2_status omsf2_preprocess(const omsf2_preprocess_spec* spec, const omsf2_image* image, float* out,
                              size_t out_len, omsf2_letterbox* box);

/* omsf2.data.preprocess.unletterbox: a (map_h, map_w) heat map over the model input back onto an
 * (image_h, image_w) image; `out` receives image_h * image_w float32 values. */
omsf2_status omsf2_unletterbox(const omsf2_preprocess_spec* spec, const float* heatmap, int32_t map_h, int32_t map_w,
                               int32_t image_h, int32_t image_w, float* out, size_t out_len);

/* Probabilities from `count` logits by the task's activation ("multiclass": softmax, "multilabel":
 * sigmoid), computed in double and stored as float32 into `out` (count values). */
omsf2_status omsf2_activate(const char* task, const float* logits, int32_t count, float* out, size_t out_len);

/* Whether an engine built as `manifest_json` (the text of an engine's .json manifest, `manifest_len`
 * bytes) loads on TensorRT `trt_version` ("10.3.0.30") and a GPU named `gpu_name` of compute
 * capability cc_major.cc_minor: OMSF2_OK when it does; OMSF2_ERR_UNSUPPORTED when it does not, the
 * reason in omsf2_last_error() (the line omsf2.runtime.engine_manifest.compatibility_error gives);
 * OMSF2_ERR_INVALID_ARGUMENT for a document that is not an engine manifest. */
omsf2_status omsf2_check_engine_compatibility(const char* manifest_json, size_t manifest_len, const char* trt_version,
                                              const char* gpu_name, int32_t cc_major, int32_t cc_minor);

/* Whether `text` (`len` bytes) passes the strict JSON rule manifests are read by: OMSF2_OK, or
 * OMSF2_ERR_INVALID_ARGUMENT with the reason in omsf2_last_error(). */
omsf2_status omsf2_check_json(const char* text, size_t len);

/* Whether an image with `attributes` may be analysed by a bundle that accepts `accepts_json` (the text of a
 * manifest's "accepts" object, `accepts_len` bytes; NULL: the defaults) under `flags` (OMSF2_GATE_*):
 * OMSF2_OK, or OMSF2_ERR_NOT_APPLICABLE with the reason in omsf2_last_error() ("not applicable: body part
 * EXTREMITY (this bundle accepts CHEST)"); OMSF2_ERR_INVALID_ARGUMENT for unknown flags or bad JSON. */
omsf2_status omsf2_check_input(const char* accepts_json, size_t accepts_len, const omsf2_input_attributes* attributes,
                               uint32_t flags);

/* Open a bundle folder: verify manifest.json and every file's sha256, read the classes, the task and
 * the preprocessing spec, and open the backend's model. The first opens with backend "auto" and
 * OpenVINO's default threads; `options` may be NULL (the same). */
omsf2_status omsf2_runtime_create(const char* bundle_dir, omsf2_runtime** out);
omsf2_status omsf2_runtime_create_with_options(const char* bundle_dir, const omsf2_runtime_options* options,
                                               omsf2_runtime** out);
/* As _with_options, after holding manifest.json's bytes to `trust` (NULL: nothing required) before any
 * other file is read: another digest, an unsigned bundle, a key not trusted or a signature that does not
 * verify is OMSF2_ERR_BUNDLE; keys given to a library without signature support are OMSF2_ERR_UNSUPPORTED
 * (pin the digest instead); an unreadable key file or a malformed digest is OMSF2_ERR_INVALID_ARGUMENT. */
omsf2_status omsf2_runtime_create_trusted(const char* bundle_dir, const omsf2_runtime_options* options,
                                          const omsf2_trust* trust, omsf2_runtime** out);
void omsf2_runtime_destroy(omsf2_runtime* runtime);
/* The bundle's id (manifest.json's sha256, 64 hex digits) and the id of the key that signed it ("" when
 * unsigned); static for the runtime's life. */
const char* omsf2_runtime_digest(const omsf2_runtime* runtime);
const char* omsf2_runtime_signer(const omsf2_runtime* runtime);
/* The bundle's class count, class names (index < count) and preprocessing spec. */
int32_t omsf2_runtime_num_classes(const omsf2_runtime* runtime);
const char* omsf2_runtime_class_name(const omsf2_runtime* runtime, int32_t index);
omsf2_status omsf2_runtime_spec(const omsf2_runtime* runtime, omsf2_preprocess_spec* spec);
/* The backend that runs ("openvino", "openvino-int8", "tensorrt"; "" when the library has none) and
 * the bundle's task ("multiclass" or "multilabel"); static for the runtime's life. */
const char* omsf2_runtime_backend(const omsf2_runtime* runtime);
const char* omsf2_runtime_task(const omsf2_runtime* runtime);

/* omsf2_check_input with what this runtime's bundle accepts. Call it before omsf2_runtime_run on a DICOM:
 * an image that is not applicable must produce no result. */
omsf2_status omsf2_runtime_check_input(const omsf2_runtime* runtime, const omsf2_input_attributes* attributes,
                                       uint32_t flags);

/* Preprocess and infer one image. The result is owned by the caller (omsf2_result_destroy). */
omsf2_status omsf2_runtime_run(omsf2_runtime* runtime, const omsf2_image* image, omsf2_result** out);
int32_t omsf2_result_label(const omsf2_result* result); /* class index: the highest probability */
/* probabilities (by the bundle's task), num_classes values */
const float* omsf2_result_probabilities(const omsf2_result* result);
/* heat map at the image's resolution, height * width values, row-major */
const float* omsf2_result_heatmap(const omsf2_result* result, int32_t* height, int32_t* width);
void omsf2_result_destroy(omsf2_result* result);

#ifdef __cplusplus
}
#endif

#endif /* OMSF2_RUNTIME_H */
