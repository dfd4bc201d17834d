// Caller strings echoed in error messages: quoted and cut at kEchoMax bytes, so a 1 MB key or
// name given by mistake gives a readable message (mc.h promises the cut).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mc {

constexpr size_t kEchoMax = 256;

// "text", or "first 256 bytes..." (N bytes) when longer.
inline std::string echo(std::string_view s) {
  if (s.size() <= kEchoMax) return "\"" + std::string(s) + "\"";
  return "\"" + std::string(s.substr(0, kEchoMax)) + "...\" (" + std::to_string(s.size()) + " bytes)";
}

}  // namespace mc
