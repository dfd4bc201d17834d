// The descriptor service: the local descriptor, its deltas, publishing, control requests.
#include "engine/engine.h"
#include "proto/notify_msg.h"

#include <unistd.h>
#include <algorithm>

#include "util/log.h"
#include "util/net.h"

namespace mc {

Status EngineCore::publish() {
  // Serialized so that a slower publish of an older descriptor never overwrites a newer one.
  if (!metadata_->needs_publish()) return Status::Ok();
  std::lock_guard<std::mutex> lk(publish_mu_);
  Status st = metadata_->publish(local_descriptor());
  if (!st.ok()) MC_LOGW("engine " << name_ << ": publishing the descriptor failed: " << st.message());
  // The buffer change itself stands: peers that already know us keep working, and the store
  // gets the newest descriptor with the next publish.
  return Status::Ok();
}

Descriptor EngineCore::local_descriptor() {
  Descriptor d;
  d.name = name_;
  d.incarnation = incarnation_;
  d.host_id = host_boot_id();
  d.pid = getpid();
  d.tcp = tcp_addr_;
  std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
  d.version = desc_version_;
  d.buffers.reserve(buffers_.size());
  for (auto &[a, b] : buffers_) d.buffers.push_back({a, b->length, b->location, {}, b->access.load()});
  d.set_min_access();
  for (auto *t : data_transports_) t->describe(d);
  return d;
}

Status EngineCore::control(const std::string &channel, const std::string &request, std::string *reply) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  if (channel == kNotifyChannel) return receive_notify(request, reply);
  for (auto *t : data_transports_)
    if (channel == t->name()) return t->handle_control(request, reply);
  return Err(MC_ERR_UNSUPPORTED, "no transport \"" + channel + "\" in this engine");
}

// Records that the buffer at addr changed in the current descriptor version (caller holds
// buffers_mu_ exclusively). The log lets a peer that knows version V fetch only what changed
// since V; it keeps the last kChangeLog changes.
void EngineCore::note_change(uint64_t addr) {
  changes_.emplace_back(desc_version_, addr);
  if (changes_.size() > kChangeLog) {
    log_floor_ = changes_.front().first;  // changes of this version may be partly gone
    changes_.pop_front();
  }
}

// An incremental descriptor (see proto/descriptor.h, "delta") for a peer that knows version
// `since` of this incarnation, or the full one when the log cannot tell what changed.
std::string EngineCore::descriptor_delta_json(uint64_t inc, uint64_t since) {
  Descriptor d;
  std::vector<uint64_t> removed;
  {
    std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
    if (inc != incarnation_ || since == 0 || since > desc_version_ || since < log_floor_) {
      lk.unlock();
      return descriptor_json();
    }
    d.name = name_;
    d.incarnation = incarnation_;
    d.host_id = host_boot_id();
    d.pid = getpid();
    d.tcp = tcp_addr_;
    d.version = desc_version_;
    std::vector<uint64_t> touched;
    auto it =
        std::upper_bound(changes_.begin(), changes_.end(), since,
                         [](uint64_t v, const std::pair<uint64_t, uint64_t> &c) { return v < c.first; });
    for (; it != changes_.end(); ++it) touched.push_back(it->second);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t a : touched) {
      auto b = buffers_.find(a);
      if (b == buffers_.end()) {
        removed.push_back(a);
      } else {
        BufferDesc bd{a, b->second->length, b->second->location, {}};
        bd.access = b->second->access.load();
        d.buffers.push_back(std::move(bd));
      }
    }
    for (auto *t : data_transports_) t->describe(d);
  }
  deltas_served_.fetch_add(1, std::memory_order_relaxed);
  return d.to_delta_json(since, removed);
}

std::string EngineCore::descriptor_json() {
  uint64_t v;
  {
    std::shared_lock<ReadMostlyMutex> lk(buffers_mu_);
    v = desc_version_;
  }
  {
    std::lock_guard<std::mutex> lk(desc_mu_);
    if (desc_cache_version_ == v) return desc_cache_;
  }
  Descriptor d = local_descriptor();
  std::string j = d.to_json();
  std::lock_guard<std::mutex> lk(desc_mu_);
  if (d.version >= desc_cache_version_) {
    desc_cache_ = j;
    desc_cache_version_ = d.version;
  }
  return j;
}

}  // namespace mc
