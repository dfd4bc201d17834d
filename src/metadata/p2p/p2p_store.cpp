#include "control/client.h"
#include "metadata/metadata.h"

namespace mc {
namespace {

// The engine's listener answers GET_DESC itself, so publishing is a no-op here and a fetch is
// one control round trip to the name, which is the peer's HOST:PORT.
class P2pStore : public MetadataStore {
 public:
  explicit P2pStore(std::string token) : token_(std::move(token)) {}
  Status publish(const Descriptor &) override { return Status::Ok(); }
  bool needs_publish() const override { return false; }
  void unpublish() override {}
  // Asks the peer for what changed since the version we have (one small reply for a peer with
  // thousands of buffers), and falls back to a full fetch when the delta does not apply.
  Status fetch_update(const std::string &name, uint32_t timeout_ms, const Descriptor &have,
                      Descriptor *out) override {
    HostPort hp;
    Status st = parse_host_port(name, &hp);
    if (!st.ok()) return fetch(name, timeout_ms, out);
    std::string json;
    st = control_fetch_descriptor_since(hp, token_, timeout_ms, have.incarnation, have.version, &json);
    if (!st.ok()) return st;
    st = Descriptor::from_json_update(json, have, out, name);
    if (st.ok()) return Status::Ok();
    return fetch(name, timeout_ms, out);
  }
  Status fetch(const std::string &name, uint32_t timeout_ms, Descriptor *out) override {
    HostPort hp;
    Status st = parse_host_port(name, &hp);
    if (!st.ok())
      return Err(MC_ERR_INVALID_ARG,
                 "with metadata=p2p a segment name is the peer's HOST:PORT; " + st.message());
    std::string json;
    st = control_fetch_descriptor(hp, token_, timeout_ms, &json);
    if (!st.ok()) return st;
    st = Descriptor::from_json(json, out, name);
    if (!st.ok()) return st;
    return Status::Ok();
  }

 private:
  std::string token_;
};

}  // namespace

std::unique_ptr<MetadataStore> make_p2p_store(const std::string &token) {
  return std::make_unique<P2pStore>(token);
}

}  // namespace mc
