// One JSON object written member by member: the engine's statistics (and any transport's) go
// through it instead of strings concatenated by hand, so quoting and commas are right once.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mc {

class JsonObject {
 public:
  JsonObject() : s_("{") {}
  JsonObject &num(std::string_view key, uint64_t v) { return raw(key, std::to_string(v)); }
  JsonObject &str(std::string_view key, std::string_view v) {
    key_(key);
    quote(v);
    return *this;
  }
  // A member whose value is JSON text already (a nested object).
  JsonObject &raw(std::string_view key, std::string_view json) {
    key_(key);
    s_ += json;
    return *this;
  }
  // Members given as JSON text without braces ("\"a\":1,\"b\":2"); "" adds nothing.
  JsonObject &members(std::string_view text) {
    if (text.empty()) return *this;
    if (s_.size() > 1) s_ += ',';
    s_ += text;
    return *this;
  }
  // The object's text; the writer is spent after this.
  std::string done() {
    s_ += '}';
    return std::move(s_);
  }

 private:
  void key_(std::string_view key) {
    if (s_.size() > 1) s_ += ',';
    quote(key);
    s_ += ':';
  }
  // Escapes quotes, backslashes and control characters; other bytes pass as they are (UTF-8
  // stays UTF-8; engine and segment names are printable ASCII where they enter).
  void quote(std::string_view v) {
    static const char hex[] = "0123456789abcdef";
    s_ += '"';
    for (unsigned char c : v) {
      if (c == '"' || c == '\\') {
        s_ += '\\';
        s_ += static_cast<char>(c);
      } else if (c < 0x20 || c == 0x7f) {
        s_ += "\\u00";
        s_ += hex[c >> 4];
        s_ += hex[c & 15];
      } else {
        s_ += static_cast<char>(c);
      }
    }
    s_ += '"';
  }
  std::string s_;
};

}  // namespace mc
