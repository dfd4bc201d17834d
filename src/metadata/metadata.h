// Where segment descriptors live. p2p (the default) needs no server: an engine serves its own
// descriptor on its listener and peers fetch it by HOST:PORT.
#pragma once
#include <memory>
#include <string>

#include "common/descriptor.h"

namespace mc {

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;
  // Makes d findable under d.name. Called again whenever the descriptor changes.
  virtual Status publish(const Descriptor &d) = 0;
  // Fetches the descriptor published under name; blocks at most timeout_ms.
  virtual Status fetch(const std::string &name, uint32_t timeout_ms, Descriptor *out) = 0;
  // Withdraws this engine's descriptor (engine destroy).
  virtual void unpublish() = 0;
};

std::unique_ptr<MetadataStore> make_p2p_store();

// The store for a `metadata` config value ("p2p", later "etcd://...", "redis://...").
// self_name is the engine's name; timeout_ms bounds every store operation.
Status make_metadata_store(const std::string &url, const std::string &self_name,
                           uint32_t timeout_ms, std::unique_ptr<MetadataStore> *out);

}  // namespace mc
