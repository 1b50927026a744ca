// The strict JSON reader: the documents omsf2.runtime.rules.loads_json refuses, this refuses too.
//
// Two readers that resolve a duplicate key differently would see two manifests in one file, so
// duplicates are refused; a nesting limit keeps the recursion bounded; NaN and Infinity are not
// JSON. The text must be valid UTF-8 as Python's decoder defines it (no overlong forms, no encoded
// surrogates, nothing above U+10FFFF). Numbers go through std::from_chars, never strtod or a stream,
// so a host running under a comma locale reads 0.485 as 0.485.
#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cstdint>
#include <string>

#include "omsf2_json.hpp"
#include "omsf2_rules.hpp"

namespace omsf2 {

const Json* Json::get(std::string_view key) const {
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

bool Json::truthy() const {
  switch (kind) {
    case Null: return false;
    case Bool: return boolean;
    case Number: return number != 0.0;
    case String: return !str.empty();
    case Array: return !array.empty();
    case Object: return !object.empty();
  }
  return false;
}

namespace {

// Length of the UTF-8 sequence at s[i] (Python's strict decoder), or 0 when it is invalid.
size_t utf8_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return i + k < s.size() ? static_cast<uint8_t>(s[i + k]) : 0u; };
  const auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return b(k) >= lo && b(k) <= hi; };
  const unsigned c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no UTF-16 surrogates
  if (c >= 0xE1 && c <= 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void check_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_length(s, i);
    if (n == 0) throw JsonError("not UTF-8 (invalid byte sequence at byte " + std::to_string(i) + ")");
    i += n;
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  // Lone surrogates (valid in a \u escape, as in Python) take the 3-byte form, so equal keys stay equal.
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Json document() {
    Json j = value(0);
    ws();
    if (i_ != s_.size()) fail("extra data");
    return j;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw JsonError(what + " at byte " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  Json value(int depth) {
    ws();
    if (i_ >= s_.size()) fail("unexpected end of document");
    const char c = s_[i_];
    if (c == '{' || c == '[') {
      if (depth + 1 > rules::kJsonMaxDepth)
        fail("nested deeper than " + std::to_string(rules::kJsonMaxDepth) + " levels");
      return c == '{' ? object(depth + 1) : array(depth + 1);
    }
    Json j;
    if (c == '"') {
      j.kind = Json::String;
      j.str = string();
    } else if (literal("true")) {
      j.kind = Json::Bool;
      j.boolean = true;
    } else if (literal("false")) {
      j.kind = Json::Bool;
    } else if (literal("null")) {
      j.kind = Json::Null;
    } else if (s_.substr(i_, 3) == "NaN" || s_.substr(i_, 8) == "Infinity" || s_.substr(i_, 9) == "-Infinity") {
      fail("NaN and Infinity are not JSON");
    } else {
      number(j);
    }
    return j;
  }

  Json object(int depth) {
    ++i_;
    Json j;
    j.kind = Json::Object;
    if (eat('}')) return j;
    do {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
      std::string key = string();
      if (j.get(key)) fail("duplicate key '" + key + "'");
      expect(':');
      j.object.emplace_back(std::move(key), value(depth));
    } while (eat(','));
    expect('}');
    return j;
  }

  Json array(int depth) {
    ++i_;
    Json j;
    j.kind = Json::Array;
    if (eat(']')) return j;
    do j.array.push_back(value(depth));
    while (eat(','));
    expect(']');
    return j;
  }

  uint32_t hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      const int d = is_digit(h)                ? h - '0'
                    : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                    : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                             : -1;
      if (d < 0) fail("invalid \\u escape");
      v = v * 16 + static_cast<uint32_t>(d);
    }
    return v;
  }

  uint32_t unicode_escape() {
    uint32_t cp = hex4();
    // A high surrogate followed by an escaped low one is one code point (Python pairs them too).
    if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
      const size_t save = i_;
      i_ += 2;
      const uint32_t lo = hex4();
      if (lo >= 0xDC00 && lo <= 0xDFFF) return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      i_ = save;
    }
    return cp;
  }

  std::string string() {
    ++i_;  // the opening quote
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      switch (s_[i_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, unicode_escape()); break;
        default: --i_, fail("invalid escape");
      }
    }
  }

  // RFC 8259's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
  void number(Json& j) {
    const size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !is_digit(s_[i_])) fail("expected a value");
    if (s_[i_] == '0') ++i_;
    else
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    bool integer = true;
    if (i_ < s_.size() && s_[i_] == '.') {
      integer = false;
      if (++i_ >= s_.size() || !is_digit(s_[i_])) fail("expected digits after '.'");
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      integer = false;
      if (++i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ >= s_.size() || !is_digit(s_[i_])) fail("expected digits in the exponent");
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    }
    j.kind = Json::Number;
    j.integer = integer;
    j.number = to_double(s_.substr(start, i_ - start), integer);
  }

  double to_double(std::string_view lexeme, bool integer) {
    double v = 0.0;
    const auto r = std::from_chars(lexeme.data(), lexeme.data() + lexeme.size(), v);
    if (r.ec == std::errc() && r.ptr == lexeme.data() + lexeme.size()) return v;
    if (r.ec != std::errc::result_out_of_range) fail("bad number");
    const bool negative = lexeme[0] == '-';
    if (integer) return negative ? -DBL_MAX : DBL_MAX;  // Python keeps any integer; it is never a double here
    if (overflows(lexeme)) fail("number '" + std::string(lexeme) + "' is out of range (not finite)");
    return negative ? -0.0 : 0.0;  // underflow: Python reads it as 0.0 as well
  }

  // Out of range one way or the other: the power of ten of the first significant digit says which.
  static bool overflows(std::string_view lexeme) {
    const size_t e = lexeme.find_first_of("eE");
    const std::string_view mantissa = lexeme.substr(0, e);
    const size_t dot = std::min(mantissa.find('.'), mantissa.size());
    const size_t first = mantissa.find_first_of("123456789");
    if (first == std::string_view::npos) return false;
    const long long power =
        first < dot ? static_cast<long long>(dot - first - 1) : -static_cast<long long>(first - dot);
    long long exponent = 0;
    if (e != std::string_view::npos) {
      std::string_view digits = lexeme.substr(e + 1);
      if (digits[0] == '+') digits.remove_prefix(1);
      const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), exponent);
      if (r.ec == std::errc::result_out_of_range) exponent = digits[0] == '-' ? -(1LL << 60) : (1LL << 60);
    }
    return power + exponent >= 0;
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

Json parse_json(std::string_view text) {
  check_utf8(text);
  return Parser(text).document();
}

}  // namespace omsf2
