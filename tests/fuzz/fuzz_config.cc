// libFuzzer target for config keys and values: mc::Config::set (and validate), the public
// mc_config_set, mc::parse_size, mc::parse_int and mc::resolve_options
// (src/util/config.h).
//
// Input: a sequence of (key, value) strings in FuzzedDataProvider's format: each string ends
// at a backslash followed by any character other than a backslash ("\\\\" is one backslash), so
// a seed reads like "workers\\\n4\\\nslice_size\\\n1M". Checked per pair: the internal and the
// public setter agree; a refusal is MC_ERR_INVALID_ARG with a message, and leaves the config as
// it was; parse_size and parse_int agree with a reference written here with 128-bit
// arithmetic. At the end every value the config accepted must resolve (resolve_options), and
// the options it yields lie in the documented ranges.
#include <fuzzer/FuzzedDataProvider.h>
#include <stdlib.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "util/config.h"
#include "mc.h"

namespace {

#define CHECK(cond, s)                                                                      \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "fuzz_config: check failed: %s (input \"%s\")\n", #cond,          \
                   std::string(s).c_str());                                                 \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

// Reference for parse_size: digits with an optional K/M/G suffix (either case), at most 24
// characters, no overflow of 64 bits.
bool ref_size(const std::string &s, uint64_t *out) {
  if (s.empty() || s.size() > 24) return false;
  size_t n = s.size();
  unsigned __int128 mult = 1;
  char last = static_cast<char>(std::toupper(static_cast<unsigned char>(s[n - 1])));
  if (last == 'K') mult = 1ull << 10;
  if (last == 'M') mult = 1ull << 20;
  if (last == 'G') mult = 1ull << 30;
  if (mult != 1) n--;
  if (n == 0) return false;
  unsigned __int128 v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + static_cast<unsigned>(s[i] - '0');
    if (v > UINT64_MAX) return false;
  }
  v *= mult;
  if (v > UINT64_MAX) return false;
  *out = static_cast<uint64_t>(v);
  return true;
}

// Reference for parse_int: an optional '-', then digits; at most 19 characters in all; the
// value in [lo, hi].
bool ref_int(const std::string &s, int64_t lo, int64_t hi, int64_t *out) {
  if (s.empty() || s.size() > 19) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  __int128 v = 0;
  for (; i < s.size(); i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  if (s[0] == '-') v = -v;
  if (v < lo || v > hi) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  // Config::get falls back to MC_<KEY>; keep the environment out of the results.
  for (const auto &k : mc::Config::keys()) {
    std::string env = "MC_";
    for (char c : k) env += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    unsetenv(env.c_str());
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  mc::Config cfg;
  mc_config_t *pub = nullptr;
  if (mc_config_create(&pub) != MC_OK) std::abort();
  for (int pairs = 0; fdp.remaining_bytes() > 0 && pairs < 64; pairs++) {
    std::string key = fdp.ConsumeRandomLengthString(64);
    std::string value = fdp.ConsumeRandomLengthString(512);
    // `plugins` loads shared objects (dlopen of a fuzzed path, MC_ERR_UNSUPPORTED when it
    // cannot): not a config codec to fuzz; tests/plugin and scripts/test-plugin.sh test it.
    if (key == "plugins") continue;

    std::string before;
    bool had = false;
    if (key.find('\0') == std::string::npos) {
      had = cfg.get(key, &before).ok();
    }
    mc::Status st = cfg.set(key, value);
    if (!st.ok()) {
      CHECK(st.code() == MC_ERR_INVALID_ARG, key + "=" + value);
      CHECK(!st.message().empty(), key + "=" + value);
      std::string after;
      if (had) CHECK(cfg.get(key, &after).ok() && after == before, key + "=" + value);
    } else {
      std::string got;
      CHECK(cfg.get(key, &got).ok() && got == value, key + "=" + value);
    }
    CHECK(mc::Config::validate(key, value).ok() == st.ok(), key + "=" + value);
    // The C API sees strings up to the first NUL; compare where that is the same string.
    if (key.find('\0') == std::string::npos && value.find('\0') == std::string::npos) {
      mc_status_t cs = mc_config_set(pub, key.c_str(), value.c_str());
      CHECK((cs == MC_OK) == st.ok(), key + "=" + value);
      if (cs != MC_OK) CHECK(mc_last_error()[0] != '\0', key + "=" + value);
    }

    uint64_t a = 0, b = 0;
    bool pa = mc::parse_size(value, &a), pb = ref_size(value, &b);
    CHECK(pa == pb && (!pa || a == b), value);
    int64_t lo = static_cast<int64_t>(fdp.ConsumeIntegral<uint64_t>());
    int64_t hi = static_cast<int64_t>(fdp.ConsumeIntegral<uint64_t>());
    int64_t x = 0, y = 0;
    bool ia = mc::parse_int(value, lo, hi, &x), ib = ref_int(value, lo, hi, &y);
    CHECK(ia == ib && (!ia || x == y), value);
  }
  mc::EngineOptions o;
  mc::Status rs = mc::resolve_options(cfg, &o);
  CHECK(rs.ok(), rs.message());
  CHECK(o.workers >= 1 && o.workers <= 256, "workers");
  CHECK(o.slice_size >= 4096 && o.slice_size <= (1ull << 30), "slice_size");
  int64_t conns = 4;
  CHECK(o.value("tcp_connections").empty() || mc::parse_int(o.value("tcp_connections"), 1, 64, &conns),
        "tcp_connections");
  CHECK(o.timeout_ms >= 1 && o.timeout_ms <= 3600000, "timeout_ms");
  CHECK(o.log_level >= -1 && o.log_level <= 3, "log_level");
  mc_config_destroy(pub);
  return 0;
}
