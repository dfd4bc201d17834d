// The text exposition writer (see prom_text.h).
#include "util/prom_text.h"

#include <cstdio>
#include <cstdlib>

namespace mc {

bool PromText::valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); i++) {
    char c = n[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string PromText::escape_label(std::string_view v) {
  std::string o;
  o.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      o += "\\\\";
    else if (c == '"')
      o += "\\\"";
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  }
  return o;
}

// HELP text escapes only backslash and newline.
static std::string escape_help(std::string_view v) {
  std::string o;
  for (char c : v) {
    if (c == '\\')
      o += "\\\\";
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  }
  return o;
}

PromText::Family *PromText::family(std::string_view name, std::string_view type, std::string_view help) {
  if (!valid_name(name)) {
    dropped_++;
    return nullptr;
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{std::string(type), escape_help(help), {}}).first;
    order_.emplace_back(name);
  }
  return &it->second;
}

void PromText::labels_text(std::string &out, const Labels &labels, std::string_view extra_key,
                           std::string_view extra_value) {
  if (labels.empty() && extra_key.empty()) return;
  out += '{';
  bool first = true;
  auto one = [&](std::string_view k, std::string_view v) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    out += escape_label(v);
    out += '"';
  };
  for (auto &[k, v] : labels) one(k, v);
  if (!extra_key.empty()) one(extra_key, extra_value);
  out += '}';
}

void PromText::add(std::string_view name, std::string_view type, std::string_view help, const Labels &labels,
                   uint64_t value) {
  Family *f = family(name, type, help);
  if (!f) return;
  f->body += name;
  labels_text(f->body, labels);
  f->body += ' ';
  f->body += std::to_string(value);
  f->body += '\n';
}

// The shortest text that reads back as the same double (le="0.0001", not 0.00010000000000000001).
static std::string num(double v) {
  char b[40];
  for (int p = 1; p <= 17; p++) {
    std::snprintf(b, sizeof b, "%.*g", p, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

void PromText::add_double(std::string_view name, std::string_view type, std::string_view help,
                          const Labels &labels, double value) {
  Family *f = family(name, type, help);
  if (!f) return;
  f->body += name;
  labels_text(f->body, labels);
  f->body += ' ';
  f->body += num(value);
  f->body += '\n';
}

// A bucket bound in plain decimal seconds: 10000 ns -> "0.00001", 10 s -> "10".
static std::string seconds(uint64_t ns) {
  std::string s =
      std::to_string(ns / 1000000000) + "." + std::to_string(1000000000 + ns % 1000000000).substr(1);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

void PromText::histogram(std::string_view name, std::string_view help, const Labels &labels,
                         const Histogram::Snapshot &h) {
  Family *f = family(name, "histogram", help);
  if (!f) return;
  std::string n(name);
  for (size_t i = 0; i < Histogram::kBuckets; i++) {
    f->body += n + "_bucket";
    std::string le = i < Histogram::kBoundsNs.size() ? seconds(Histogram::kBoundsNs[i]) : "+Inf";
    labels_text(f->body, labels, "le", le);
    f->body += ' ' + std::to_string(h.cumulative[i]) + '\n';
  }
  f->body += n + "_sum";
  labels_text(f->body, labels);
  f->body += ' ' + num(double(h.sum_ns) / 1e9) + '\n';
  f->body += n + "_count";
  labels_text(f->body, labels);
  f->body += ' ' + std::to_string(h.count) + '\n';
}

std::string PromText::text() const {
  std::string o;
  for (auto &n : order_) {
    const Family &f = families_.find(n)->second;
    o += "# HELP " + n + ' ' + f.help + '\n';
    o += "# TYPE " + n + ' ' + f.type + '\n';
    o += f.body;
  }
  return o;
}

}  // namespace mc
