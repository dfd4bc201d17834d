// libFuzzer target for the same-host transports' descriptor entries (proto::ShmBlob and
// proto::NvlinkBlob, {"socket": NAME} from the metadata store or a peer's GET_DESC) and for the
// one text request a same-host server parses from a connecting peer ("FD <addr>",
// proto::parse_fd_request). The first byte picks which. Checks: samehost_fuzz.h, plus a socket
// name that fits sockaddr_un without a NUL inside, and an FD request that parses only when it is
// exactly what fd_request() writes for the value it parsed.
#include "samehost_fuzz.h"

namespace {
template <class Blob>
void blob(const uint8_t *data, size_t size) {
  samehost_fuzz::run<Blob>(data, size, MC_ERR_METADATA, [](const Blob &b) {
    if (b.socket.empty() || b.socket.size() > 100 || b.socket.find('\0') != std::string::npos)
      samehost_fuzz::die("an unusable socket name", b.socket);
  });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  switch (data[0] % 3) {
    case 0:
      blob<mc::proto::ShmBlob>(data + 1, size - 1);
      break;
    case 1:
      blob<mc::proto::NvlinkBlob>(data + 1, size - 1);
      break;
    default: {
      std::string req(reinterpret_cast<const char *>(data + 1), size - 1);
      uint64_t a = 0;
      if (mc::proto::parse_fd_request(req, &a) && mc::proto::fd_request(a) != req)
        samehost_fuzz::die("an FD request parsed that is not in canonical form", req);
    }
  }
  return 0;
}
