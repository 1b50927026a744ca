// The strict JSON reader manifests are read with (see json.cpp for the rule).
#ifndef OMSF2_JSON_HPP
#define OMSF2_JSON_HPP

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace omsf2 {

// A document the strict rule refuses; the message is one line (what and where).
struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A parsed JSON value; objects keep their order (and hold no duplicate keys).
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0.0;
  bool integer = false;  // a Number written without fraction or exponent (Python reads it as an int)
  std::string str;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  const Json* get(std::string_view key) const;
  // Python's truthiness of the value (bool(x) of what json.loads returns).
  bool truthy() const;
};

// Parse `text` by the rule omsf2.runtime.rules.loads_json applies: RFC 8259 JSON in valid UTF-8,
// nested at most rules::kJsonMaxDepth levels, no duplicate keys, no NaN or Infinity (nor a number
// too large for a double). Numbers are read with std::from_chars: the host's locale plays no part.
Json parse_json(std::string_view text);

}  // namespace omsf2

#endif  // OMSF2_JSON_HPP
