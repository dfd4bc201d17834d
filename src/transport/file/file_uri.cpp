#include "transport/file/file_uri.h"

#include <cctype>

namespace mc::file {

bool parse_size_value(const std::string &v, uint64_t *out) {
  if (v.empty() || v.size() > 24) return false;
  uint64_t mult = 1;
  size_t n = v.size();
  switch (std::toupper(static_cast<unsigned char>(v.back()))) {
    case 'K':
      mult = 1ull << 10;
      n--;
      break;
    case 'M':
      mult = 1ull << 20;
      n--;
      break;
    case 'G':
      mult = 1ull << 30;
      n--;
      break;
    default:
      break;
  }
  if (n == 0) return false;
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (!std::isdigit(static_cast<unsigned char>(v[i]))) return false;
    x = x * 10 + static_cast<uint64_t>(v[i] - '0');
    if (x > (1ull << 62)) return false;
  }
  if (x == 0 || x > (1ull << 62) / mult) return false;
  *out = x * mult;
  return true;
}

namespace {

bool parse_flag(const std::string &v, bool *out) {
  if (v != "0" && v != "1") return false;
  *out = v == "1";
  return true;
}

bool parse_query(const std::string &uri, const std::string &q, FileUri *out, std::string *why) {
  size_t pos = 0;
  while (pos <= q.size()) {
    size_t amp = q.find('&', pos);
    std::string kv = q.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    size_t eq = kv.find('=');
    std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
    bool ok = eq != std::string::npos;
    if (ok && k == "size") {
      ok = parse_size_value(v, &out->size);
      out->has_size = ok;
    } else if (ok && k == "sync") {
      ok = parse_flag(v, &out->sync);
    } else if (ok && k == "direct") {
      ok = parse_flag(v, &out->direct);
    } else {
      *why = uri + ": unknown query key \"" + k + "\" (size=N[K|M|G], sync=0|1, direct=0|1)";
      return false;
    }
    if (!ok) {
      *why = uri + ": bad value \"" + v + "\" for " + k +
             (k == "size" ? " (a size of 1 byte or more, K/M/G suffixes allowed)" : " (0 or 1)");
      return false;
    }
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return true;
}

}  // namespace

bool parse_file_uri(const std::string &uri, FileUri *out, std::string *why) {
  static const std::string kPrefix = "file://";
  if (uri.compare(0, kPrefix.size(), kPrefix) != 0) {
    *why = uri + ": not a file:// name";
    return false;
  }
  std::string rest = uri.substr(kPrefix.size());
  size_t qpos = rest.find('?');
  std::string path = rest.substr(0, qpos);
  if (path.empty() || path[0] != '/') {
    *why = uri + ": the path \"" + path + "\" is not absolute (write file:///abs/path: three slashes)";
    return false;
  }
  FileUri u;
  u.path = path;
  if (qpos != std::string::npos && !parse_query(uri, rest.substr(qpos + 1), &u, why)) return false;
  *out = u;
  return true;
}

}  // namespace mc::file
