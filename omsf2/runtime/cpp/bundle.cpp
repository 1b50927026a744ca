// Bundle verification in C++: manifest.json parsing, SHA-256 of every file, the same refusals as
// omsf2.runtime.bundle.load_bundle (newer format, escaping paths, changed/added/removed files).
// Self-contained (a small JSON reader and FIPS 180-4 SHA-256) so a scanner links no extra library.
#include "omsf2_bundle.hpp"

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace omsf2 {

// ------------------------------------------------------------------------------------- JSON

namespace {

struct Parser {
  const std::string& s;
  size_t i = 0;

  [[noreturn]] void fail(const char* what) const {
    throw BundleError(std::string("manifest.json is not valid JSON: ") + what + " at byte " + std::to_string(i));
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail("unexpected character");
  }
  std::string string() {
    expect('"');
    std::string out;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      char e = s[i++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          if (i + 4 > s.size()) fail("short \\u escape");
          unsigned cp = std::stoul(s.substr(i, 4), nullptr, 16);
          i += 4;
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {  // surrogate pairs are kept as two 3-byte sequences: names in omsf2 manifests are ASCII
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: out += e;
      }
    }
    if (i >= s.size()) fail("unterminated string");
    ++i;
    return out;
  }
  Json value() {
    ws();
    if (i >= s.size()) fail("unexpected end");
    Json j;
    char c = s[i];
    if (c == '{') {
      ++i;
      j.kind = Json::Object;
      if (eat('}')) return j;
      do {
        ws();
        std::string k = string();
        expect(':');
        j.object.emplace_back(std::move(k), value());
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++i;
      j.kind = Json::Array;
      if (eat(']')) return j;
      do j.array.push_back(value());
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      j.kind = Json::String;
      j.str = string();
    } else if (s.compare(i, 4, "true") == 0 || s.compare(i, 5, "false") == 0) {
      j.kind = Json::Bool;
      j.boolean = s[i] == 't';
      i += j.boolean ? 4 : 5;
    } else if (s.compare(i, 4, "null") == 0) {
      i += 4;
    } else {
      size_t used = 0;
      try {
        j.number = std::stod(s.substr(i, 64), &used);
      } catch (const std::exception&) {
        fail("bad number");
      }
      j.kind = Json::Number;
      i += used;
    }
    return j;
  }
};

}  // namespace

const Json* Json::get(const std::string& key) const {
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

Json parse_json(const std::string& text) {
  Parser p{text};
  Json j = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return j;
}

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
    std::ostringstream o;
    static const char* digits = "0123456789abcdef";
    for (uint32_t v : h)
      for (int k = 28; k >= 0; k -= 4) o << digits[(v >> k) & 0xF];
    return o.str();
  }
};

}  // namespace

std::string sha256_bytes(const std::string& data) {
  Sha256 s;
  s.update(reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return s.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BundleError("cannot read '" + path + "'");
  Sha256 s;
  std::vector<char> chunk(1 << 20);
  while (f) {
    f.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    s.update(reinterpret_cast<const unsigned char*>(chunk.data()), static_cast<size_t>(f.gcount()));
  }
  return s.hex();
}

// ------------------------------------------------------------------------------------- bundle

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw BundleError("bundle '" + p.parent_path().string() + "' has no manifest.json");
  std::ostringstream o;
  o << f.rdbuf();
  return o.str();
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
  if (mismatch.first != real_root.end()) throw BundleError(where + "'" + name + "' resolves outside the bundle folder");
  return full;
}

const Json& need(const Json& j, const char* key, Json::Kind kind) {
  const Json* v = j.get(key);
  if (!v || v->kind != kind) throw BundleError(std::string("manifest.json has no valid '") + key + "'");
  return *v;
}

}  // namespace

BundleInfo load_bundle(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw BundleError("bundle '" + dir + "' is not a folder");
  const Json m = parse_json(read_text(root / "manifest.json"));
  if (m.kind != Json::Object || !m.get("format") || m.get("format")->str != "omsf2-bundle")
    throw BundleError("'" + (root / "manifest.json").string() + "' is not an omsf2 bundle manifest");
  const int version = static_cast<int>(need(m, "format_version", Json::Number).number);
  if (version > kBundleFormatVersion)
    throw BundleError("bundle '" + dir + "' has format version " + std::to_string(version) +
                      "; this runtime reads up to " + std::to_string(kBundleFormatVersion));
  const Json& files = need(m, "files", Json::Object);
  std::set<std::string> listed;
  for (const auto& [name, digest] : files.object) {
    fs::path p = safe_path(root, name);
    if (fs::is_symlink(p)) throw BundleError("bundle '" + dir + "': '" + name + "' is a symlink");
    if (!fs::is_regular_file(p))
      throw BundleError("bundle '" + dir + "': '" + name + "' is listed in manifest.json but missing (file removed)");
    if (sha256_file(p.string()) != digest.str)
      throw BundleError("bundle '" + dir + "': '" + name + "' does not match its sha256 in manifest.json (file changed)");
    listed.insert(fs::path(name).lexically_normal().generic_string());
  }
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_directory() && !it->is_symlink()) continue;
    const std::string rel = fs::relative(it->path(), root).generic_string();
    if (rel != "manifest.json" && !listed.count(rel))
      throw BundleError("bundle '" + dir + "': '" + rel + "' is not listed in manifest.json (file added)");
  }
  BundleInfo info;
  info.root = dir;
  for (const Json& c : need(m, "classes", Json::Array).array) info.classes.push_back(c.str);
  const Json& pre = need(m, "preprocess", Json::Object);
  const Json& size = need(pre, "size", Json::Array);
  if (size.array.size() != 2) throw BundleError("manifest.json: preprocess.size must be [H, W]");
  info.spec.height = static_cast<int>(size.array[0].number);
  info.spec.width = static_cast<int>(size.array[1].number);
  info.spec.channels = static_cast<int>(need(pre, "channels", Json::Number).number);
  info.spec.letterbox = need(pre, "resize", Json::String).str == "letterbox";
  info.spec.pad_value = static_cast<float>(need(pre, "pad_value", Json::Number).number);
  const Json& mean = need(pre, "mean", Json::Array);
  const Json& stdv = need(pre, "std", Json::Array);
  if (info.spec.channels < 1 || info.spec.channels > 3 || mean.array.empty() || stdv.array.empty())
    throw BundleError("manifest.json: preprocess needs 1..3 channels and mean/std values");
  for (int c = 0; c < 3; ++c) {
    info.spec.mean[c] = static_cast<float>(mean.array[std::min<size_t>(c, mean.array.size() - 1)].number);
    info.spec.std[c] = static_cast<float>(stdv.array[std::min<size_t>(c, stdv.array.size() - 1)].number);
  }
  for (const auto& [target, file] : need(m, "artifacts", Json::Object).object) {
    if (!listed.count(file.str)) throw BundleError("manifest.json: artifact '" + file.str + "' is not a hashed file");
    info.artifacts[target] = (root / file.str).string();
  }
  if (const Json* mb = m.get("max_batch")) info.max_batch = static_cast<int>(mb->number);
  return info;
}

}  // namespace omsf2
