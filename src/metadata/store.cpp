#include "metadata/metadata.h"

namespace mc {

Status make_metadata_store(const std::string &url, const std::string &self_name,
                           uint32_t timeout_ms, std::unique_ptr<MetadataStore> *out) {
  (void)self_name;
  (void)timeout_ms;
  if (url.empty() || url == "p2p") {
    *out = make_p2p_store();
    return Status::Ok();
  }
  return Err(MC_ERR_INVALID_ARG, "unsupported metadata store \"" + url + "\"");
}

}  // namespace mc
