// libFuzzer target for the name of a file segment: mc::file::parse_file_uri and
// parse_size_value (src/transport/file/file_uri.h), what mc_segment_open of "file://..." parses.
// Checked: never crashes; an accepted name has an absolute path without '?', its size (when
// given) is 1..2^62 and equals what parse_size_value makes of the value; a refusal says why and
// names the input.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "transport/file/file_uri.h"

#define CHECK(cond)                                                                               \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      std::fprintf(stderr, "fuzz_file_uri: check failed: %s (input \"%s\")\n", #cond, in.c_str()); \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string in(reinterpret_cast<const char *>(data), size);
  mc::file::FileUri u;
  std::string why;
  if (!mc::file::parse_file_uri(in, &u, &why)) {
    CHECK(!why.empty());
    CHECK(why.compare(0, in.size(), in) == 0);
  } else {
    CHECK(!u.path.empty() && u.path[0] == '/');
    CHECK(u.path.find('?') == std::string::npos);
    CHECK(in.compare(0, 7 + u.path.size(), "file://" + u.path) == 0);
    if (u.has_size) CHECK(u.size >= 1 && u.size <= (1ull << 62));
  }
  uint64_t v = 0;
  if (mc::file::parse_size_value(in, &v)) CHECK(v >= 1 && v <= (1ull << 62));
  return 0;
}
