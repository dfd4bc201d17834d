// The Prometheus text exposition format (version 0.0.4) written family by family: samples may
// be added in any order (the engine, then each transport), and text() groups each family's
// samples under one # HELP and # TYPE line, as the format requires. Label values are escaped
// once here; metric and label names are the caller's constants.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/histogram.h"

namespace mc {

class PromText {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  // One sample of family `name` ("counter", "gauge" or "untyped"); the first call for a family
  // fixes its type and help. A name that is not a valid metric name is dropped (and counted in
  // dropped()), so a transport's odd stats key cannot break the whole exposition.
  void add(std::string_view name, std::string_view type, std::string_view help, const Labels &labels,
           uint64_t value);
  void add_double(std::string_view name, std::string_view type, std::string_view help, const Labels &labels,
                  double value);
  // One histogram series: NAME_bucket{le=...} (seconds), NAME_sum (seconds) and NAME_count.
  void histogram(std::string_view name, std::string_view help, const Labels &labels,
                 const Histogram::Snapshot &h);

  std::string text() const;
  size_t dropped() const { return dropped_; }

  static bool valid_name(std::string_view name);
  // "a\"b\\c\nd" -> a\"b\\c\nd as the format escapes label values.
  static std::string escape_label(std::string_view v);

 private:
  struct Family {
    std::string type, help;
    std::string body;  // its sample lines
  };
  Family *family(std::string_view name, std::string_view type, std::string_view help);
  static void labels_text(std::string &out, const Labels &labels, std::string_view extra_key = {},
                          std::string_view extra_value = {});

  std::vector<std::string> order_;  // families in the order first added
  std::map<std::string, Family, std::less<>> families_;
  size_t dropped_ = 0;
};

}  // namespace mc
