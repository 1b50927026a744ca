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
};

// Verify a bundle folder as omsf2.runtime.bundle.load_bundle does; throws BundleError (one line).
BundleInfo load_bundle(const std::string& dir);

// A bundle file read once into memory, its sha256 checked against manifest.json: the bytes
// returned are the bytes that were hashed, so what is deserialised is what was verified, whatever
// happens to the file afterwards. Throws BundleError.
std::string read_verified(const BundleInfo& bundle, const std::string& name);

}  // namespace omsf2

#endif  // OMSF2_BUNDLE_HPP
