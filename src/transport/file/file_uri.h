// The name of a file segment: "file:///abs/path" with optional query keys. Parsed from the
// user's string (mc_segment_open) only; never from a peer.
#pragma once
#include <cstdint>
#include <string>

namespace mc::file {

struct FileUri {
  std::string path;       // absolute, as given (no percent-decoding; '?' ends it)
  bool has_size = false;  // size=N given: create the file or grow it to N bytes first
  uint64_t size = 0;
  bool sync = false;   // sync=1: a WRITE completes once durable (RWF_DSYNC)
  bool direct = true;  // direct=0: never O_DIRECT (the page cache for every request)
};

// Parses "file:///abs/path[?size=N[K|M|G]][&sync=0|1][&direct=0|1]". False with *why (naming
// the uri) for a relative path, an unknown key or a bad value.
bool parse_file_uri(const std::string &uri, FileUri *out, std::string *why);

// "4096", "64K", "1M", "2G" (powers of 1024), 1..2^62: false for anything else.
bool parse_size_value(const std::string &v, uint64_t *out);

}  // namespace mc::file
