#include "util/hex.h"

namespace mc::hex {
namespace {
constexpr char kDigits[] = "0123456789abcdef";

int value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::string encode(const void *p, size_t n) {
  const auto *b = static_cast<const unsigned char *>(p);
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = kDigits[b[i] >> 4];
    s[2 * i + 1] = kDigits[b[i] & 15];
  }
  return s;
}

bool decode(std::string_view s, void *out, size_t n) {
  if (s.size() != 2 * n) return false;
  auto *b = static_cast<unsigned char *>(out);
  for (size_t i = 0; i < n; i++) {
    int hi = value(s[2 * i]), lo = value(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    b[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

std::string u64(uint64_t v) {
  std::string s(16, '0');
  for (int i = 15; i >= 0; i--, v >>= 4) s[i] = kDigits[v & 15];
  return s;
}

bool parse_u64(std::string_view s, uint64_t *out) {
  if (s.empty() || s.size() > 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d = value(c);
    if (d < 0) return false;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

}  // namespace mc::hex
