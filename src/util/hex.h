// The one hex codec: bytes <-> lowercase hex digits, and 64-bit numbers as 16 hex digits.
// Used for auth nonces and proofs, CUDA IPC handles, RDMA GIDs and engine incarnations.
// Parsers take untrusted text: they never throw and reject anything but exact hex.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mc::hex {

// 2*n lowercase hex digits for the n bytes at p.
std::string encode(const void *p, size_t n);
// Exactly 2*n hex digits (either case) into n bytes at out; false (out unspecified) otherwise.
bool decode(std::string_view s, void *out, size_t n);
// v as 16 lowercase hex digits, zero-padded.
std::string u64(uint64_t v);
// 1 to 16 hex digits (either case) into *out; false otherwise.
bool parse_u64(std::string_view s, uint64_t *out);

}  // namespace mc::hex
