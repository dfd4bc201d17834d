// The engine's side of notifications: starting and stopping the sender, delivering a NOTIFY
// over the control channel, serving the "notify" channel, mc_notify_recv and the event fd.
#include "control/client.h"
#include "engine/engine.h"
#include "proto/notify_msg.h"
#include "util/log.h"
#include "util/net.h"

namespace mc {

void EngineCore::start_notify() {
  inbox_ = std::make_unique<NotifyInbox>(opts_.notify_queue);
  notify_sender_ =
      std::make_unique<NotifySender>([this](NotifyJob &j) { return send_notify(j); },
                                     [this](NotifyJob &j, mc_status_t st) { finish_notify(j.slot, st); });
}

void EngineCore::stop_notify() {
  if (notify_sender_) notify_sender_->stop();
}

void EngineCore::poke_notifies() {
  if (notify_sender_) notify_sender_->poke();
}

// At most once: control_call never sends a CONTROL request twice (a pooled connection found
// dead is not retried), so a send whose answer is lost ends FAILED and is not repeated.
mc_status_t EngineCore::send_notify(NotifyJob &j) {
  if (stopping_.load()) return MC_ERR_PEER_DOWN;
  if (j.peer->state.load() == MC_SEGMENT_UNREACHABLE) return MC_ERR_PEER_DOWN;
  {
    // The peer restarted since the submit (the probe saw it): the message was for the old one.
    std::lock_guard<std::mutex> lk(j.peer->mu);
    if (j.peer->desc->incarnation != j.target_inc) return MC_ERR_PEER_DOWN;
  }
  HostPort addr;
  if (!parse_host_port(j.addr, &addr).ok()) return MC_ERR_PEER_DOWN;
  NotifyMsg m;
  m.sender = name_;
  m.sender_incarnation = incarnation_;
  m.target_incarnation = j.target_inc;
  m.body = std::move(j.body);
  std::string reply;
  Status st =
      control_call(addr, opts_.auth_token, kNotifyChannel, m.encode(), opts_.timeout_ms, &reply, nullptr);
  if (!st.ok()) MC_LOGD("engine " << name_ << ": NOTIFY to " << j.peer->name << " failed: " << st.message());
  return st.code();
}

Status EngineCore::receive_notify(const std::string &request, std::string *reply) {
  NotifyMsg m;
  Status st = NotifyMsg::decode(request, &m);
  if (!st.ok()) return st;
  if (m.target_incarnation != incarnation_) {
    inbox_->count_stale();
    return Err(MC_ERR_PEER_DOWN, "notification for another incarnation of " + name_);
  }
  st = inbox_->push(std::move(m.sender), m.sender_incarnation, std::move(m.body));
  if (!st.ok()) return st;
  reply->clear();
  return Status::Ok();
}

mc_status_t EngineCore::notify_recv(mc_notification_t *info, void *buf, size_t capacity, std::string *err) {
  return inbox_->recv(info, buf, capacity, err);
}

Status EngineCore::event_fd(int *fd) {
  if (stopping_.load()) return Err(MC_ERR_PEER_DOWN, "the engine is being destroyed");
  return inbox_->event_fd(fd);
}

}  // namespace mc
