// Bundle verification in C++: manifest.json read by the strict JSON rule, SHA-256 of every file, the
// same refusals as omsf2.runtime.bundle.load_bundle (newer format, escaping paths, changed, added or
// removed files, an unknown task, an invalid preprocessing spec, a manifest that disagrees with its
// model files, a bundle the trust policy refuses).
// Self-contained (FIPS 180-4 SHA-256 here, the JSON reader in json.cpp) so a scanner links no extra
// library; only signatures need OpenSSL's libcrypto (trust.cpp).
#include "omsf2_bundle.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "omsf2_model_check.hpp"
#include "omsf2_rules.hpp"

namespace fs = std::filesystem;

namespace omsf2 {

// ------------------------------------------------------------------------------------- SHA-256

namespace {

constexpr std::array<uint32_t, 64> K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

struct Sha256 {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char buf[64];
  size_t fill = 0;
  uint64_t bits = 0;

  void block(const unsigned char* p) {
    uint32_t w[64];
    for (int t = 0; t < 16; ++t)
      w[t] = (uint32_t(p[4 * t]) << 24) | (uint32_t(p[4 * t + 1]) << 16) | (uint32_t(p[4 * t + 2]) << 8) | p[4 * t + 3];
    for (int t = 16; t < 64; ++t) {
      uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; ++t) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  void update(const unsigned char* p, size_t n) {
    bits += uint64_t(n) * 8;
    while (n) {
      size_t take = std::min(n, 64 - fill);
      std::memcpy(buf + fill, p, take);
      fill += take, p += take, n -= take;
      if (fill == 64) block(buf), fill = 0;
    }
  }
  std::string hex() {
    uint64_t total = bits;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (fill != 56) update(&zero, 1);
    unsigned char len[8];
    for (int k = 0; k < 8; ++k) len[k] = static_cast<unsigned char>(total >> (56 - 8 * k));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h)
      for (int k = 28; k >= 0; k -= 4) out += digits[(v >> k) & 0xF];
    return out;
  }
};

std::string sha256_stream(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BundleError("cannot read '" + path.string() + "'");
  Sha256 s;
  std::vector<char> chunk(1 << 20);
  while (f) {
    f.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    s.update(reinterpret_cast<const unsigned char*>(chunk.data()), static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw BundleError("cannot read '" + path.string() + "'");
  return s.hex();
}

}  // namespace

std::string sha256_bytes(std::string_view data) {
  Sha256 s;
  s.update(reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return s.hex();
}

// ------------------------------------------------------------------------------------- files

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw BundleError("cannot read '" + p.string() + "'");
  std::string data;
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) throw BundleError("cannot read '" + p.string() + "'");
  data.resize(static_cast<size_t>(size));
  f.seekg(0, std::ios::beg);
  f.read(data.data(), size);
  if (f.gcount() != size) throw BundleError("cannot read '" + p.string() + "' (it changed while read)");
  return data;
}

fs::path safe_path(const fs::path& root, const std::string& name) {
  const std::string where = "bundle '" + root.string() + "': ";
  if (name.empty() || name.find('\\') != std::string::npos || name.find('\0') != std::string::npos)
    throw BundleError(where + "invalid file name '" + name + "' in manifest.json");
  fs::path rel(name);
  if (rel.is_absolute() || name[0] == '~') throw BundleError(where + "path '" + name + "' escapes the bundle folder");
  for (const auto& part : rel)
    if (part == "..") throw BundleError(where + "path '" + name + "' escapes the bundle folder");
  fs::path full = root / rel;
  std::error_code ec;
  fs::path real = fs::weakly_canonical(full, ec), real_root = fs::weakly_canonical(root, ec);
  auto mismatch = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
  if (mismatch.first != real_root.end())
    throw BundleError(where + "'" + name + "' resolves outside the bundle folder (symlink)");
  return full;
}

// A listed file that must be a plain file (never a symlink) inside the bundle.
fs::path plain_file(const fs::path& root, const std::string& name) {
  const fs::path p = safe_path(root, name);
  const std::string where = "bundle '" + root.string() + "': '" + name + "'";
  if (fs::is_symlink(p)) throw BundleError(where + " is a symlink; bundles hold plain files");
  if (!fs::is_regular_file(p)) throw BundleError(where + " is listed in manifest.json but missing (file removed)");
  return p;
}

void verify_files(const fs::path& root, const Json& files) {
  const std::string where = "bundle '" + root.string() + "': ";
  if (files.kind != Json::Object || files.object.empty()) throw BundleError(where + "manifest.json lists no files");
  std::set<std::string> listed;
  for (const auto& [name, digest] : files.object) {
    const fs::path p = plain_file(root, name);
    if (digest.kind != Json::String || sha256_stream(p) != digest.str)
      throw BundleError(where + "'" + name + "' does not match its sha256 in manifest.json (file changed)");
    listed.insert(fs::path(name).lexically_normal().generic_string());
  }
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_directory() && !it->is_symlink()) continue;
    const std::string rel = fs::relative(it->path(), root).generic_string();
    if (rel != "manifest.json" && rel != kSignatureFile && !listed.count(rel))
      throw BundleError(where + "'" + rel + "' is not listed in manifest.json (file added)");
  }
}

// ------------------------------------------------------------------------------------- manifest fields

const Json& need(const Json& j, const char* key, Json::Kind kind) {
  const Json* v = j.get(key);
  if (!v || v->kind != kind) throw std::invalid_argument(std::string("no valid '") + key + "'");
  return *v;
}

// One or `channels` finite numbers, spread over three channels as the runtime uses them.
void per_channel(const Json* values, int channels, const char* key, float out[3]) {
  if (!values) return;  // keep the default
  if (values->kind != Json::Array || (values->array.size() != 1 && values->array.size() != size_t(channels)))
    throw std::invalid_argument(std::string(key) + " needs 1 or " + std::to_string(channels) + " values");
  for (int c = 0; c < 3; ++c) {
    const Json& v = values->array[std::min<size_t>(c, values->array.size() - 1)];
    if (v.kind != Json::Number || !std::isfinite(v.number))
      throw std::invalid_argument(std::string(key) + " must be finite");
    out[c] = static_cast<float>(v.number);
  }
}

// omsf2.config.PreprocessSpec.from_dict: Python's defaults for absent keys, unknown keys refused.
Spec read_spec(const Json& pre) {
  if (pre.kind != Json::Object) throw std::invalid_argument("preprocess is not an object");
  static const std::set<std::string> known = {"size", "resize", "mean", "std", "channels", "pad_value"};
  for (const auto& kv : pre.object)
    if (!known.count(kv.first)) throw std::invalid_argument("preprocess spec has unknown key '" + kv.first + "'");
  Spec s;
  s.height = s.width = 224, s.channels = 1, s.letterbox = true, s.pad_value = 0.0f;
  if (const Json* size = pre.get("size")) {
    if (size->kind != Json::Array || size->array.size() != 2) throw std::invalid_argument("size must be [H, W]");
    for (const Json& v : size->array)
      if (v.kind != Json::Number || v.number != std::floor(v.number) || v.number < 16 || v.number > 65536)
        throw std::invalid_argument("size must be two integers >= 16");
    s.height = static_cast<int>(size->array[0].number), s.width = static_cast<int>(size->array[1].number);
  }
  if (const Json* ch = pre.get("channels")) {
    if (ch->kind != Json::Number || (ch->number != 1 && ch->number != 3))
      throw std::invalid_argument("channels must be 1 or 3");
    s.channels = static_cast<int>(ch->number);
  }
  if (const Json* r = pre.get("resize")) {
    if (r->kind != Json::String || (r->str != "letterbox" && r->str != "stretch"))
      throw std::invalid_argument("resize must be letterbox or stretch");
    s.letterbox = r->str == "letterbox";
  }
  const float mean_default[3] = {0.5f, 0.5f, 0.5f}, std_default[3] = {0.25f, 0.25f, 0.25f};
  std::copy(mean_default, mean_default + 3, s.mean), std::copy(std_default, std_default + 3, s.std);
  per_channel(pre.get("mean"), s.channels, "mean", s.mean);
  per_channel(pre.get("std"), s.channels, "std", s.std);
  for (float v : s.std)
    if (!(v > 0.0f)) throw std::invalid_argument("std must be positive");
  if (const Json* pad = pre.get("pad_value")) {
    if (pad->kind != Json::Number || !(pad->number >= 0.0 && pad->number <= 1.0))
      throw std::invalid_argument("pad_value must lie in [0, 1]");
    s.pad_value = static_cast<float>(pad->number);
  }
  return s;
}

void read_model_fields(const std::string& dir, const Json& m, BundleInfo& info) {
  try {
    for (const Json& c : need(m, "classes", Json::Array).array) {
      if (c.kind != Json::String) throw std::invalid_argument("classes must be strings");
      info.classes.push_back(c.str);
    }
    const Json* pre = m.get("preprocess");
    if (!pre) throw std::invalid_argument("no 'preprocess'");
    info.spec = read_spec(*pre);
  } catch (const std::invalid_argument& e) {
    throw BundleError("bundle '" + dir + "' has no valid classes/preprocess (" + e.what() + ")");
  }
  if (info.classes.empty()) throw BundleError("bundle '" + dir + "' lists no classes");
  if (const Json* task = m.get("task")) info.task = task->kind == Json::String ? task->str : "?";
  if (!rules::activation_of(info.task))
    throw BundleError("bundle '" + dir + "': unknown task '" + info.task + "' (" + rules::task_names() + ")");
  try {
    info.accepts = read_accepts(m.get("accepts"));
  } catch (const std::invalid_argument& e) {
    throw BundleError("bundle '" + dir + "': " + e.what());
  }
}

Json read_manifest(const fs::path& root, const std::string& bytes) {
  const fs::path path = root / "manifest.json";
  Json m;
  try {
    m = parse_json(bytes);
  } catch (const JsonError& e) {
    throw BundleError("'" + path.string() + "' is not valid JSON (" + e.what() + ")");
  }
  if (m.kind != Json::Object) throw BundleError("'" + path.string() + "' is not a JSON object");
  const Json* format = m.get("format");
  if (!format || format->kind != Json::String || format->str != rules::kBundleFormat)
    throw BundleError("'" + path.string() + "' is not an omsf2 bundle manifest");
  const Json* version = m.get("format_version");
  if (!version || version->kind != Json::Number || !version->integer || version->number < 1)
    throw BundleError("'" + path.string() + "' has no valid format_version");
  if (version->number > rules::kBundleFormatVersion)
    throw BundleError("bundle '" + root.string() + "' has format version " + std::to_string(int64_t(version->number)) +
                      "; this runtime reads up to " + std::to_string(rules::kBundleFormatVersion));
  return m;
}

// Each model file against the manifest (model_check), in the order of the artifacts' target names.
void check_models(const std::string& dir, const Json& m, const BundleInfo& info) {
  ManifestFields fields;
  fields.classes = m.get("classes");
  fields.task = info.task;
  fields.preprocess = m.get("preprocess");
  const Json* exp = m.get("export");
  const Json* ckpt = exp && exp->kind == Json::Object ? exp->get("checkpoint") : nullptr;
  const Json* sha = ckpt && ckpt->kind == Json::Object ? ckpt->get("sha256") : nullptr;
  if (sha && sha->kind == Json::String) fields.checkpoint_sha256 = sha->str;
  for (const auto& [target, file] : info.artifacts) {  // std::map: sorted by target, as Python sorts
    ModelInfo model;
    try {
      if (file.size() > 7 && file.compare(file.size() - 7, 7, ".engine") == 0) {
        if (!info.files.count(file + ".json")) continue;  // the engine session refuses it when it opens
        model = engine_model_info(parse_json(read_verified(info, file + ".json")));
      } else {
        model = onnx_model_info(read_verified(info, file));
      }
    } catch (const std::invalid_argument& e) {
      throw BundleError("bundle '" + dir + "': '" + file + "' is not a readable model file (" + e.what() + ")");
    } catch (const JsonError& e) {
      throw BundleError("bundle '" + dir + "': '" + file + "' is not a readable model file (" + e.what() + ")");
    }
    try {
      check_model(fields, model, file);
    } catch (const ModelMismatch& e) {
      throw BundleError("bundle '" + dir + "': " + e.what());
    }
  }
}

}  // namespace

rules::Accepts read_accepts(const Json* accepts) {
  rules::Accepts out = rules::default_accepts();
  if (!accepts || accepts->kind == Json::Null) return out;
  const char* keys[] = {"modalities", "body_parts", "views"};
  std::vector<std::string>* fields[] = {&out.modalities, &out.body_parts, &out.views};
  const auto known = [&](const std::string& k) { return std::find(std::begin(keys), std::end(keys), k) != std::end(keys); };
  bool ok = accepts->kind == Json::Object;
  for (const auto& kv : ok ? accepts->object : std::vector<std::pair<std::string, Json>>{})
    ok = ok && known(kv.first) && kv.second.kind == Json::Array;
  if (!ok) throw std::invalid_argument("'accepts' must be an object with lists body_parts, modalities, views");
  for (size_t k = 0; k < 3; ++k) {
    const Json* list = accepts->get(keys[k]);
    if (!list || list->array.empty()) continue;  // absent or empty: the default
    std::vector<std::string> values;
    for (const Json& v : list->array) {
      if (v.kind != Json::String)
        throw std::invalid_argument(std::string("accepts.") + keys[k] +
                                    " must be a non-empty list of DICOM code strings (letters, digits, '_')");
      values.push_back(v.str);
    }
    *fields[k] = rules::accepted_terms(values, std::string("accepts.") + keys[k]);
  }
  return out;
}

BundleInfo load_bundle(const std::string& dir, const TrustPolicy& trust) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw BundleError("bundle '" + dir + "' is not a folder");
  if (!fs::is_regular_file(root / "manifest.json"))
    throw BundleError("'" + dir + "' is not an omsf2 bundle: it has no manifest.json");
  const std::string bytes = slurp(root / "manifest.json");  // hashed, verified and parsed: one read
  const std::string signer = verify_manifest(dir, bytes, trust);
  const Json m = read_manifest(root, bytes);
  const Json* files = m.get("files");
  const Json none;
  verify_files(root, files ? *files : none);
  BundleInfo info;
  info.root = dir;
  info.digest = sha256_bytes(bytes);
  info.signer = signer;
  for (const auto& [name, digest] : files->object) info.files[name] = digest.str;
  read_model_fields(dir, m, info);
  const Json* artifacts = m.get("artifacts");
  if (!artifacts || artifacts->kind != Json::Object || artifacts->object.empty())
    throw BundleError("bundle '" + dir + "' names no model artifacts");
  for (const auto& [target, file] : artifacts->object) {
    if (file.kind != Json::String || !info.files.count(file.str))
      throw BundleError("bundle '" + dir + "': artifact '" + file.str + "' is not among the hashed files");
    info.artifacts[target] = file.str;
  }
  check_models(dir, m, info);
  return info;
}

std::string read_verified(const BundleInfo& bundle, const std::string& name) {
  const auto listed = bundle.files.find(name);
  if (listed == bundle.files.end())
    throw BundleError("bundle '" + bundle.root + "': '" + name + "' is not among the hashed files");
  std::string data = slurp(plain_file(bundle.root, name));
  if (sha256_bytes(data) != listed->second)
    throw BundleError("bundle '" + bundle.root + "': '" + name +
                      "' does not match its sha256 in manifest.json (file changed)");
  return data;
}

}  // namespace omsf2
