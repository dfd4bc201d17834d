// White-box tests of mc::PromText, the Prometheus text exposition writer behind GET /metrics:
// its output parsed back line by line (label values with quotes, backslashes and newlines
// round-trip; families stay whole when samples of several come interleaved; a bad metric name
// is dropped, not written; histogram buckets are cumulative with plain-decimal bounds) and
// mc::Histogram's snapshot (count equals the +Inf bucket). tests/test_metrics.c parses the
// engine's whole page and has Prometheus scrape it.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "util/prom_text.h"

extern "C" {
#include <cmocka.h>
}

using mc::Histogram;
using mc::PromText;

namespace {

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // values unescaped
  std::string value;
};

// Parses an exposition; fails on a malformed line. types gets each family's TYPE.
std::vector<Sample> parse(const std::string &text, std::map<std::string, std::string> *types) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream l(line.substr(7));
      std::string n, t;
      l >> n >> t;
      assert_true(types->count(n) == 0);  // one TYPE line per family
      (*types)[n] = t;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') i++;
    s.name = line.substr(0, i);
    assert_true(PromText::valid_name(s.name));
    if (line[i] == '{') {
      i++;
      while (line[i] != '}') {
        size_t eq = line.find('=', i);
        std::string k = line.substr(i, eq - i);
        assert_int_equal(line[eq + 1], '"');
        std::string v;
        for (i = eq + 2; line[i] != '"'; i++) {
          assert_true(i < line.size());
          if (line[i] == '\\') {
            i++;
            v += line[i] == 'n' ? '\n' : line[i];
          } else {
            v += line[i];
          }
        }
        s.labels.push_back({k, v});
        i++;
        if (line[i] == ',') i++;
      }
      i++;
    }
    assert_int_equal(line[i], ' ');
    s.value = line.substr(i + 1);
    out.push_back(s);
  }
  return out;
}

void test_labels_round_trip(void **) {
  PromText m;
  std::string odd = "a\"b\\c\nd}e,f=g";
  m.add("mc_x_total", "counter", "help with \\ and\nnewline", {{"peer", odd}, {"k", ""}}, 7);
  m.add("mc_y", "gauge", "y", {}, 1);
  m.add("mc_x_total", "counter", "ignored", {{"peer", "plain"}, {"k", "v"}}, 18446744073709551615ull);
  m.add("9bad-name", "gauge", "dropped", {}, 1);
  m.add_double("mc_z", "gauge", "z", {}, 0.25);
  assert_int_equal(m.dropped(), 1);
  std::string text = m.text();
  std::map<std::string, std::string> types;
  auto s = parse(text, &types);
  assert_int_equal(s.size(), 4);
  // mc_x_total's two samples are together, before mc_y although added around it.
  assert_string_equal(s[0].name.c_str(), "mc_x_total");
  assert_string_equal(s[1].name.c_str(), "mc_x_total");
  assert_string_equal(s[2].name.c_str(), "mc_y");
  assert_string_equal(s[0].labels[0].second.c_str(), odd.c_str());
  assert_string_equal(s[0].labels[1].second.c_str(), "");
  assert_string_equal(s[0].value.c_str(), "7");
  assert_string_equal(s[1].value.c_str(), "18446744073709551615");
  assert_string_equal(s[3].value.c_str(), "0.25");
  assert_string_equal(types["mc_x_total"].c_str(), "counter");
  assert_string_equal(types["mc_z"].c_str(), "gauge");
  assert_non_null(strstr(text.c_str(), "# HELP mc_x_total help with \\\\ and\\nnewline\n"));
  assert_null(strstr(text.c_str(), "9bad"));
}

void test_histogram(void **) {
  Histogram h;
  h.observe(5'000);           // <= 10 us
  h.observe(10'000);          // on the bound: still the first bucket
  h.observe(3'000'000);       // <= 5 ms
  h.observe(60'000'000'000);  // beyond 10 s: only +Inf
  Histogram::Snapshot snap = h.snapshot();
  assert_int_equal(snap.count, 4);
  assert_int_equal(snap.cumulative[0], 2);
  assert_int_equal(snap.cumulative[Histogram::kBuckets - 1], 4);
  PromText m;
  m.histogram("mc_lat_seconds", "latency", {{"outcome", "completed"}}, snap);
  std::map<std::string, std::string> types;
  auto s = parse(m.text(), &types);
  assert_string_equal(types["mc_lat_seconds"].c_str(), "histogram");
  assert_int_equal(s.size(), Histogram::kBuckets + 2);
  assert_string_equal(s[0].labels[1].second.c_str(), "0.00001");
  assert_string_equal(s[Histogram::kBuckets - 2].labels[1].second.c_str(), "10");
  assert_string_equal(s[Histogram::kBuckets - 1].labels[1].second.c_str(), "+Inf");
  double last = 0;
  for (size_t i = 0; i < Histogram::kBuckets; i++) {
    double v = std::stod(s[i].value);
    assert_true(v >= last);
    last = v;
  }
  assert_string_equal(s[Histogram::kBuckets].name.c_str(), "mc_lat_seconds_sum");
  assert_true(std::stod(s[Histogram::kBuckets].value) > 60.0);
  assert_string_equal(s[Histogram::kBuckets + 1].value.c_str(), "4");
}

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_labels_round_trip),
      cmocka_unit_test(test_histogram),
  };
  return cmocka_run_group_tests(tests, nullptr, nullptr);
}
