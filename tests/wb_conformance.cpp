// The transport conformance suite (tests/conformance_cases.h) against every transport built
// into the library. mc_conformance (tools/) runs the same cases against one transport by name,
// a plugin's included.
#include "conformance_cases.h"

int main() {
  std::vector<std::string> names;
  for (auto &e : mc::transport_registry()) names.push_back(e.name);
  return conf::run_suite("wb_conformance", names).failed;
}
