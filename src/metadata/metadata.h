// Where segment descriptors live. p2p (the default) needs no server: an engine serves its own
// descriptor on its listener and peers fetch it by HOST:PORT. etcd and redis keep every engine's
// descriptor under <prefix>/segments/<name> with an expiry that the engine keeps refreshing, so a
// crashed engine's descriptor disappears on its own.
#pragma once
#include <memory>
#include <string>

#include "proto/descriptor.h"

namespace mc {

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;
  // Makes d findable under d.name. The first call claims the name: MC_ERR_EXISTS when a live
  // engine (one that answers its health probe with the stored incarnation) holds it; a dead
  // holder's descriptor is taken over at once. Later calls (whenever the descriptor changes)
  // update the key only while this engine still holds it. Blocks at most about timeout_ms
  // (plus one health probe when the name is taken).
  virtual Status publish(const Descriptor &d) = 0;
  // Fetches the descriptor published under name; blocks at most timeout_ms. No such name:
  // MC_ERR_NOT_FOUND; the store unreachable or the descriptor unusable: MC_ERR_METADATA.
  virtual Status fetch(const std::string &name, uint32_t timeout_ms, Descriptor *out) = 0;
  // Fetches the descriptor under name for a caller that already has `have` (an older one):
  // stores that can send only what changed do so. Default: a full fetch.
  virtual Status fetch_update(const std::string &name, uint32_t timeout_ms, const Descriptor &have,
                              Descriptor *out) {
    (void)have;
    return fetch(name, timeout_ms, out);
  }
  // Withdraws this engine's descriptor and stops the store's threads (engine destroy).
  virtual void unpublish() = 0;
  // False when publish() does nothing with the descriptor (p2p serves it on demand), so the
  // engine need not build one on every buffer change.
  virtual bool needs_publish() const { return true; }
};

// token: this engine's auth_token ("" for none), for the descriptor fetches.
std::unique_ptr<MetadataStore> make_p2p_store(const std::string &token);

// The store for a `metadata` config value: "p2p", "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]" or
// "redis://HOST:PORT[/DB]". self_name is the engine's name; timeout_ms bounds every store
// operation; ttl_ms is how long a descriptor outlives its engine's last refresh; token is the
// engine's auth_token ("" for none), used to reach peers' listeners.
Status make_metadata_store(const std::string &url, const std::string &self_name, uint32_t timeout_ms,
                           uint32_t ttl_ms, const std::string &token, std::unique_ptr<MetadataStore> *out);

// The health probe behind a name claim: pings the "tcp" address of a stored descriptor (read
// loosely, so that a newer major version is probed too). True when an engine answers there with
// the stored incarnation; *who describes the holder for messages. Blocks at most about
// 2 * timeout_ms. token: this engine's auth_token; a holder that denies us (another token) is
// alive as far as the claim goes.
bool holder_alive(const std::string &stored_json, uint32_t timeout_ms, const std::string &token,
                  std::string *who);

// The two fields of a stored descriptor that a name claim looks at, read loosely (any major
// version) through the one codec: MC_ERR_METADATA naming the field when they are malformed.
struct StoredHolder {
  std::string tcp;
  uint64_t incarnation = 0;
};
Status read_holder(const std::string &stored_json, const std::string &name, StoredHolder *out);

}  // namespace mc
