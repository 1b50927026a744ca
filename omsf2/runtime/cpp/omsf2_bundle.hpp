// Bundle verification for the C++ runtime (see bundle.cpp).
#ifndef OMSF2_BUNDLE_HPP
#define OMSF2_BUNDLE_HPP

#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "omsf2_preprocess.hpp"

namespace omsf2 {

constexpr int kBundleFormatVersion = 1;  // omsf2.runtime.bundle.FORMAT_VERSION

struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A parsed JSON value (objects keep their order).
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0.0;
  std::string str;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;
  const Json* get(const std::string& key) const;
};

Json parse_json(const std::string& text);
std::string sha256_bytes(const std::string& data);
std::string sha256_file(const std::string& path);

struct BundleInfo {
  std::string root;
  std::vector<std::string> classes;
  Spec spec;
  std::map<std::string, std::string> artifacts;  // export target -> path
  int max_batch = 32;
};

// Verify a bundle folder as omsf2.runtime.bundle.load_bundle does; throws BundleError (one line).
BundleInfo load_bundle(const std::string& dir);

}  // namespace omsf2

#endif  // OMSF2_BUNDLE_HPP
