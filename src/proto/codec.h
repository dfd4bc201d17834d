// The codec base every peer-facing message is read through.
//
// Bytes from a peer or a metadata store are untrusted: a string where a number belongs, a
// negative length, a float, a missing field or a 1 GB array must end in a Status naming the
// peer, the message and the field, never in an exception on a thread without a handler.
// So each message is a typed struct with
//     static constexpr const char *kWhat = "shm LIST reply";   // for error messages
//     bool read(proto::Reader &r, const nlohmann::json &root);  // fills the struct
//     std::string to_json() const;                              // the sender's side
// and is decoded only through proto::decode(), which parses with exceptions off, reads every
// field through a Reader (type and range checked, first failure kept) and catches whatever
// the standard library might still throw (bad_alloc), so nothing passes it.
#pragma once
#include <mc.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mc::proto {

using nlohmann::json;

class Reader {
 public:
  Reader(std::string_view what, std::string_view peer, mc_status_t code);

  // Parses text; false (and the status set) when it is not JSON or not an object.
  bool parse(std::string_view text);
  const json &root() const { return root_; }

  // A required field of object o, of the right type and in range: false (status set) when o is
  // not an object, the field is absent or has another type. `path` names o in messages ("" for
  // the root, "buffers[2]" for an element).
  bool get(const json &o, std::string_view path, const char *key, uint64_t *out);
  bool get(const json &o, std::string_view path, const char *key, int64_t *out);
  bool get(const json &o, std::string_view path, const char *key, uint32_t *out);
  bool get(const json &o, std::string_view path, const char *key, int *out);
  bool get(const json &o, std::string_view path, const char *key, bool *out);
  bool get(const json &o, std::string_view path, const char *key, std::string *out);
  // The same for a field that may be absent: *out is left as it is then.
  template <class T>
  bool opt(const json &o, std::string_view path, const char *key, T *out) {
    if (!o.is_object()) return fail(path, "is not an object");
    if (!o.contains(key)) return true;
    return get(o, path, key, out);
  }
  // Element i of array a (its length checked by the caller through array()).
  bool at(const json &a, std::string_view path, size_t i, uint64_t *out);
  bool at(const json &a, std::string_view path, size_t i, uint32_t *out);
  bool at(const json &a, std::string_view path, size_t i, bool *out);
  bool at(const json &a, std::string_view path, size_t i, std::string *out);
  // A required field holding an array of at most max elements / an object: nullptr (status
  // set) otherwise. An absent optional array is an empty one when `required` is false.
  const json *array(const json &o, std::string_view path, const char *key, size_t max, bool required = true);
  const json *object(const json &o, std::string_view path, const char *key, bool required = true);

  // Records a failure of the value at path.key (the first one wins); always false.
  bool fail(std::string_view path, std::string_view why);
  bool fail_at(std::string_view path, const char *key, std::string_view why);
  bool ok() const { return status_.ok(); }
  const Status &status() const { return status_; }
  // "<path>.<key>" or "<path>[i]" for messages and nested paths.
  static std::string join(std::string_view path, const char *key);
  static std::string index(std::string_view path, size_t i);

 private:
  const json *field(const json &o, std::string_view path, const char *key);
  bool value(const json &v, std::string_view path, uint64_t *out);
  bool value(const json &v, std::string_view path, int64_t *out);
  bool value(const json &v, std::string_view path, uint32_t *out);
  bool value(const json &v, std::string_view path, int *out);
  bool value(const json &v, std::string_view path, bool *out);
  bool value(const json &v, std::string_view path, std::string *out);

  std::string what_;
  std::string peer_;
  mc_status_t code_;
  json root_;
  Status status_;
};

// Runs the decoding of one message of type Msg from text; on any failure *out is untouched and
// the status (code `code`: MC_ERR_TRANSPORT for a peer's reply, MC_ERR_METADATA for a
// descriptor or a stored value) names the peer, the message and the field. Never throws.
Status decode_failed(std::string_view what, std::string_view peer, mc_status_t code, const char *why);
template <class Msg>
Status decode(std::string_view text, std::string_view peer, mc_status_t code, Msg *out) noexcept {
  try {
    Reader r(Msg::kWhat, peer, code);
    if (!r.parse(text)) return r.status();
    Msg m;
    if (!m.read(r, r.root()) || !r.ok())
      return r.ok() ? decode_failed(Msg::kWhat, peer, code, "rejected") : r.status();
    *out = std::move(m);
    return Status::Ok();
  } catch (const std::exception &e) {
    return decode_failed(Msg::kWhat, peer, code, e.what());
  } catch (...) {
    return decode_failed(Msg::kWhat, peer, code, "unknown exception");
  }
}

}  // namespace mc::proto
