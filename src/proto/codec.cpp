#include "proto/codec.h"

#include <limits>

namespace mc::proto {

Reader::Reader(std::string_view what, std::string_view peer, mc_status_t code)
    : what_(what), peer_(peer), code_(code) {}

bool Reader::parse(std::string_view text) {
  root_ = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root_.is_discarded()) return fail("", "is not valid JSON");
  if (!root_.is_object()) return fail("", "is not a JSON object");
  return true;
}

std::string Reader::join(std::string_view path, const char *key) {
  std::string s(path);
  if (!s.empty()) s += '.';
  return s + key;
}

std::string Reader::index(std::string_view path, size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

bool Reader::fail(std::string_view path, std::string_view why) {
  if (status_.ok()) {
    std::string m = what_ + " from peer " + (peer_.empty() ? std::string("(unnamed)") : peer_) + ": ";
    m += path.empty() ? std::string("the message") : "field '" + std::string(path) + "'";
    m += " ";
    m += why;
    status_ = Err(code_, std::move(m));
  }
  return false;
}

bool Reader::fail_at(std::string_view path, const char *key, std::string_view why) {
  return fail(join(path, key), why);
}

Status decode_failed(std::string_view what, std::string_view peer, mc_status_t code, const char *why) {
  return Err(code, std::string(what) + " from peer " + std::string(peer) + ": " + why);
}

const json *Reader::field(const json &o, std::string_view path, const char *key) {
  if (!o.is_object()) {
    fail(path, "is not an object");
    return nullptr;
  }
  auto it = o.find(key);
  if (it == o.end()) {
    fail_at(path, key, "is missing");
    return nullptr;
  }
  return &*it;
}

// Integers only: nlohmann's get<uint64_t>() of a float is a C cast, undefined out of range.
bool Reader::value(const json &v, std::string_view path, uint64_t *out) {
  if (!v.is_number_unsigned()) return fail(path, "is not a non-negative integer");
  *out = v.get<uint64_t>();
  return true;
}

bool Reader::value(const json &v, std::string_view path, int64_t *out) {
  if (!v.is_number_integer()) return fail(path, "is not an integer");
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return fail(path, "is out of range");
  *out = v.get<int64_t>();
  return true;
}

bool Reader::value(const json &v, std::string_view path, uint32_t *out) {
  uint64_t x = 0;
  if (!value(v, path, &x)) return false;
  if (x > std::numeric_limits<uint32_t>::max()) return fail(path, "is out of range");
  *out = static_cast<uint32_t>(x);
  return true;
}

bool Reader::value(const json &v, std::string_view path, int *out) {
  int64_t x = 0;
  if (!value(v, path, &x)) return false;
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max())
    return fail(path, "is out of range");
  *out = static_cast<int>(x);
  return true;
}

bool Reader::value(const json &v, std::string_view path, bool *out) {
  if (!v.is_boolean()) return fail(path, "is not a boolean");
  *out = v.get<bool>();
  return true;
}

bool Reader::value(const json &v, std::string_view path, std::string *out) {
  if (!v.is_string()) return fail(path, "is not a string");
  *out = v.get_ref<const std::string &>();
  return true;
}

#define MC_READER_GET(T)                                                            \
  bool Reader::get(const json &o, std::string_view path, const char *key, T *out) { \
    const json *v = field(o, path, key);                                            \
    return v && value(*v, join(path, key), out);                                    \
  }
MC_READER_GET(uint64_t)
MC_READER_GET(int64_t)
MC_READER_GET(uint32_t)
MC_READER_GET(int)
MC_READER_GET(bool)
MC_READER_GET(std::string)
#undef MC_READER_GET

#define MC_READER_AT(T)                                                            \
  bool Reader::at(const json &a, std::string_view path, size_t i, T *out) {        \
    if (!a.is_array() || i >= a.size()) return fail(index(path, i), "is missing"); \
    return value(a[i], index(path, i), out);                                       \
  }
MC_READER_AT(uint64_t)
MC_READER_AT(uint32_t)
MC_READER_AT(bool)
MC_READER_AT(std::string)
#undef MC_READER_AT

const json *Reader::array(const json &o, std::string_view path, const char *key, size_t max, bool required) {
  static const json kEmpty = json::array();
  if (!required && o.is_object() && !o.contains(key)) return &kEmpty;
  const json *v = field(o, path, key);
  if (!v) return nullptr;
  if (!v->is_array()) {
    fail_at(path, key, "is not an array");
    return nullptr;
  }
  if (v->size() > max) {
    fail_at(path, key,
            "has " + std::to_string(v->size()) + " elements (at most " + std::to_string(max) + ")");
    return nullptr;
  }
  return v;
}

const json *Reader::object(const json &o, std::string_view path, const char *key, bool required) {
  static const json kEmpty = json::object();
  if (!required && o.is_object() && !o.contains(key)) return &kEmpty;
  const json *v = field(o, path, key);
  if (!v) return nullptr;
  if (!v->is_object()) {
    fail_at(path, key, "is not an object");
    return nullptr;
  }
  return v;
}

}  // namespace mc::proto
