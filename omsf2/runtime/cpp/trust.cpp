// Trust for the C++ runtime, as omsf2.runtime.trust: the manifest's sha256 against a pinned digest,
// and manifest.sig's Ed25519 signature over the manifest's exact bytes against the trusted keys.
//
// The digest needs nothing but the library's own SHA-256. Ed25519 comes from OpenSSL's libcrypto
// (EVP_DigestVerify with a NULL digest, as RFC 8032 Ed25519 requires), compiled in where CMake finds
// OpenSSL (OMSF2_WITH_OPENSSL); a library built without it refuses a policy with keys
// (OMSF2_ERR_UNSUPPORTED) rather than ignoring them, so a host never believes a check ran that did not.
#include "omsf2_trust.hpp"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "omsf2_bundle.hpp"
#include "omsf2_engine.hpp"
#include "omsf2_json.hpp"

#ifdef OMSF2_WITH_OPENSSL
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>
#endif

namespace fs = std::filesystem;

namespace omsf2 {

namespace {

bool hex_of_length(const std::string& s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

struct Signature {
  std::string key_id, signature;  // hex
};

// manifest.sig parsed and checked as trust._read_signature does; false when there is none.
bool read_signature(const std::string& root, Signature& out) {
  const fs::path path = fs::path(root) / kSignatureFile;
  const std::string where = "bundle '" + root + "': ";
  std::error_code ec;
  if (fs::is_symlink(path) || (fs::exists(path, ec) && !fs::is_regular_file(path)))
    throw BundleError(where + kSignatureFile + " is not a plain file");
  if (!fs::exists(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  std::stringstream text;
  text << f.rdbuf();
  Json doc;
  try {
    doc = parse_json(text.str());
  } catch (const JsonError& e) {
    throw BundleError(where + kSignatureFile + " is not valid (" + e.what() + ")");
  }
  const Json* format = doc.get("format");
  const Json* algorithm = doc.get("algorithm");
  const Json* key_id = doc.get("key_id");
  const Json* sig = doc.get("signature");
  const bool ok = doc.kind == Json::Object && format && format->kind == Json::String &&
                  format->str == "omsf2-signature" && algorithm && algorithm->kind == Json::String &&
                  algorithm->str == "ed25519" && key_id && key_id->kind == Json::String &&
                  hex_of_length(key_id->str, 64) && sig && sig->kind == Json::String && hex_of_length(sig->str, 128);
  if (!ok) throw BundleError(where + kSignatureFile + " is not an omsf2 Ed25519 signature");
  const Json* version = doc.get("format_version");
  if (!version || version->kind != Json::Number || !version->integer || version->number < 1 || version->number > 1)
    throw BundleError(where + kSignatureFile + " has an unsupported format version; this runtime reads 1");
  out = {key_id->str, sig->str};
  return true;
}

#ifdef OMSF2_WITH_OPENSSL
std::string bytes_from_hex(const std::string& hex) {
  std::string out;
  for (size_t k = 0; k + 1 < hex.size(); k += 2) out += static_cast<char>(std::stoi(hex.substr(k, 2), nullptr, 16));
  return out;
}

struct PkeyFree {
  void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// An Ed25519 public key from a PEM file, and its id (sha256 of the 32 raw bytes).
Pkey load_key(const std::string& file, std::string& id) {
  FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) throw std::invalid_argument("trusted key '" + file + "' cannot be read");
  Pkey key(PEM_read_PUBKEY(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  if (!key || EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519)
    throw std::invalid_argument("trusted key '" + file + "' is not an Ed25519 public key (PEM)");
  unsigned char raw[32];
  size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(key.get(), raw, &len) != 1 || len != sizeof raw)
    throw std::invalid_argument("trusted key '" + file + "' is not an Ed25519 public key (PEM)");
  id = sha256_bytes(std::string_view(reinterpret_cast<const char*>(raw), len));
  return key;
}

bool ed25519_verify(EVP_PKEY* key, const std::string& signature, std::string_view message) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}
#endif

void check_signature(const std::string& root, std::string_view manifest, const TrustPolicy& policy,
                     const Signature& sig) {
#ifdef OMSF2_WITH_OPENSSL
  std::string ids;
  for (const std::string& file : policy.key_files) {
    std::string id;
    Pkey key = load_key(file, id);
    ids += (ids.empty() ? "" : ", ") + id.substr(0, 16);
    if (id != sig.key_id) continue;
    if (!ed25519_verify(key.get(), bytes_from_hex(sig.signature), manifest))
      throw BundleError("bundle '" + root +
                        "': the signature does not verify against manifest.json (the manifest changed after signing)");
    return;
  }
  throw BundleError("bundle '" + root + "' is signed by key " + sig.key_id.substr(0, 16) +
                    "..., which is not a trusted key (" + ids + "...)");
#else
  (void)root, (void)manifest, (void)policy, (void)sig;
  throw Unsupported("this omsf2 runtime was built without OpenSSL, so it cannot check signatures; "
                    "pin the bundle's manifest sha256 instead (or rebuild with libssl-dev)");
#endif
}

}  // namespace

bool has_signatures() {
#ifdef OMSF2_WITH_OPENSSL
  return true;
#else
  return false;
#endif
}

std::string verify_manifest(const std::string& root, std::string_view manifest, const TrustPolicy& policy) {
  if (!policy.expect_sha256.empty()) {
    std::string want;
    for (char c : policy.expect_sha256) want += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!hex_of_length(want, 64))
      throw std::invalid_argument("expect_sha256 must be 64 hex digits (a bundle's manifest sha256)");
    const std::string digest = sha256_bytes(manifest);
    if (digest != want)
      throw BundleError("bundle '" + root + "': manifest sha256 " + digest.substr(0, 16) +
                        "... is not the pinned expect_sha256 " + want.substr(0, 16) +
                        "... (another bundle, or this one changed)");
  }
  if (!policy.key_files.empty() && !has_signatures())
    throw Unsupported("this omsf2 runtime was built without OpenSSL, so it cannot check signatures; "
                      "pin the bundle's manifest sha256 instead (or rebuild with libssl-dev)");
  Signature sig;
  const bool signed_bundle = read_signature(root, sig);
  if (policy.key_files.empty()) return signed_bundle ? sig.key_id : "";
  if (!signed_bundle)
    throw BundleError("bundle '" + root + "' is not signed (no manifest.sig) and the trusted keys require a signature");
  check_signature(root, manifest, policy, sig);
  return sig.key_id;
}

}  // namespace omsf2
