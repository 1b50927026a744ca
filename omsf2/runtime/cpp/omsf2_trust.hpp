// Trust in the C++ runtime: a pinned manifest digest always, Ed25519 signatures where the library
// was built with OpenSSL's libcrypto (omsf2.runtime.trust; see trust.cpp).
#ifndef OMSF2_TRUST_HPP
#define OMSF2_TRUST_HPP

#include <string>
#include <string_view>
#include <vector>

namespace omsf2 {

inline constexpr const char* kSignatureFile = "manifest.sig";

struct TrustPolicy {
  std::string expect_sha256;           // lower-case hex of manifest.json's sha256; empty: any
  std::vector<std::string> key_files;  // PEM Ed25519 public keys (omsf2 keygen's .pub); empty: no signature needed
  bool configured() const { return !expect_sha256.empty() || !key_files.empty(); }
};

// Whether this library checks Ed25519 signatures (built with OpenSSL's libcrypto).
bool has_signatures();

// Hold manifest.json's bytes to the policy before any other file of the bundle is read; returns the
// signer's key id (sha256 of the raw public key, hex), or "" when the bundle is unsigned. Throws
// BundleError (unsigned under keys, a key not trusted, a signature that does not verify, another
// digest, a malformed manifest.sig), Unsupported (keys given to a library built without OpenSSL) or
// std::invalid_argument (a malformed digest or an unreadable key file).
std::string verify_manifest(const std::string& root, std::string_view manifest, const TrustPolicy& policy);

}  // namespace omsf2

#endif  // OMSF2_TRUST_HPP
