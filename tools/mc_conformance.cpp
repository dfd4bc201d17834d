// mc_conformance: the transport conformance suite (tests/conformance_cases.h) against one
// transport by name, built in or loaded from a plugin, so a plugin's author qualifies it without
// the source tree:
//   mc_conformance --transport NAME [--plugin PATH_OR_NAME]...
// Prints each case, cmocka's summary, then one closing line:
//   === summary (mc_conformance NAME): P cases passed, F failed; S cases skipped
// Exit status: 0 when no case failed, 1 when one did, 2 for bad arguments or a plugin that
// cannot be loaded (the reason is printed).
#include <cstdio>
#include <cstring>

#include "../tests/conformance_cases.h"

namespace {

int usage(const char *why) {
  std::fprintf(stderr,
               "mc_conformance: %s\n"
               "usage: mc_conformance --transport NAME [--plugin PATH_OR_NAME]...\n"
               "  runs the transport conformance cases against NAME (built in: %s)\n",
               why, mc::transport_names().c_str());
  return 2;
}

}  // namespace

int main(int argc, char **argv) {
  std::string name;
  for (int i = 1; i < argc; i++) {
    bool more = i + 1 < argc;
    if (!std::strcmp(argv[i], "--transport") && more) {
      name = argv[++i];
    } else if (!std::strcmp(argv[i], "--plugin") && more) {
      mc::Status st = mc::load_transport_plugins(argv[++i], &conf::plugin_files());
      if (!st.ok()) {
        std::fprintf(stderr, "mc_conformance: %s\n", st.message().c_str());
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      usage("the conformance suite of mc's transports");
      return 0;
    } else {
      return usage((std::string("unknown or incomplete argument ") + argv[i]).c_str());
    }
  }
  if (name.empty()) return usage("--transport is required");
  if (!mc::transport_name_known(name)) return usage(("no transport named \"" + name + "\"").c_str());
  std::string group = "mc_conformance " + name;
  conf::SuiteResult r = conf::run_suite(group.c_str(), {name});
  int passed = r.cases - r.failed - r.skipped;
  std::printf("=== summary (%s): %d cases passed, %d failed; %d cases skipped\n", group.c_str(), passed,
              r.failed, r.skipped);
  std::fflush(stdout);
  return r.failed ? 1 : 0;
}
