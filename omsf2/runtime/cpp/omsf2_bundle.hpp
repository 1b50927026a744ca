// Bundle verification for the C++ runtime (see bundle.cpp).
#ifndef OMSF2_BUNDLE_HPP
#define OMSF2_BUNDLE_HPP

#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "omsf2_json.hpp"
#include "omsf2_preprocess.hpp"
#include "omsf2_rules.hpp"
#include "omsf2_trust.hpp"

namespace omsf2 {

struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string sha256_bytes(std::string_view data);

struct BundleInfo {
  std::string root;
  std::vector<std::string> classes;
  Spec spec;
  std::string task = "multiclass";               // the manifest's task (rules: its activation)
  std::map<std::string, std::string> artifacts;  // export target -> file name inside the bundle
  std::map<std::string, std::string> files;      // file name -> sha256 listed in manifest.json
  std::string digest;                            // sha256 of manifest.json: the bundle's id
  std::string signer;                            // key id of manifest.sig's signer ("" when unsigned)
  rules::Accepts accepts = rules::default_accepts();  // the manifest's "accepts" (clinical input gating)
};

// The "accepts" object of a manifest (gating.Accepts.from_manifest): the defaults where a key is
// absent; throws std::invalid_argument naming the key for anything but lists of code strings.
rules::Accepts read_accepts(const Json* accepts);

// Verify a bundle folder as omsf2.runtime.bundle.load_bundle does: the trust policy on the manifest's
// bytes first, then every file's sha256, then the manifest against every model file it names
// (omsf2_model_check.hpp). Throws BundleError (one line), or what verify_manifest throws.
BundleInfo load_bundle(const std::string& dir, const TrustPolicy& trust = {});

// A bundle file read once into memory, its sha256 checked against manifest.json: the bytes
// returned are the bytes that were hashed, so what is deserialised is what was verified, whatever
// happens to the file afterwards. Throws BundleError.
std::string read_verified(const BundleInfo& bundle, const std::string& name);

}  // namespace omsf2

#endif  // OMSF2_BUNDLE_HPP
