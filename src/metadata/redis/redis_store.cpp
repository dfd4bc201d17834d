/*
 * The redis metadata store.
 *
 * Why hiredis: it is redis's own reference C client (maintained in the redis organisation,
 * packaged by every distribution as libhiredis), small, with no dependencies, and it has what a
 * bounded store needs: redisConnectWithTimeout and redisSetTimeout put a limit on the connect
 * and on every reply.
 *
 * Layout: the descriptor (proto/descriptor.h, versioned JSON) is the string value of
 * <prefix>/segments/<name> with an expiry of metadata_ttl_ms. Ownership is the incarnation inside
 * the stored descriptor; the scripts below compare it on the server, so a check and its write are
 * one atomic step. What each operation sends:
 *   claim (first publish)  SET key json NX PX ttl. When the key exists its holder is
 *                          health-probed (control PING to its "tcp" address); a holder that is
 *                          silent, refuses, or answers with another incarnation is dead and its
 *                          exact value is replaced (kTakeOver); a live one is MC_ERR_EXISTS.
 *   update (later ones)    kUpdate: SET only while the stored incarnation is ours; a missing key
 *                          (expired, or the server restarted empty) is claimed again.
 *   refresh thread         every ttl/3, kRefresh: PEXPIRE while the key is ours; a missing key
 *                          is claimed again, so an engine re-publishes after the server lost its
 *                          data.
 *   fetch                  GET. redis has no watch a client can rely on (keyspace notifications
 *                          are off by default and lossy across reconnects), so there is no cache:
 *                          every open reads the current descriptor.
 *   unpublish              stop and join the refresh thread, then kDelete (only if ours).
 */
#include "util/hex.h"
#include "metadata/redis/redis_store.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "util/log.h"
#include "util/net.h"

namespace mc {
namespace {

// KEYS[1] the key; ARGV[1] our ownership mark ("incarnation":"<hex>"), ARGV[2] the new value,
// ARGV[3] the expiry in ms. Returns 1 done, 0 held by someone else, -1 missing.
const char *kUpdate =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then return -1 end "
    "if string.find(v, ARGV[1], 1, true) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 "
    "end "
    "return 0";
const char *kRefresh =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then return -1 end "
    "if string.find(v, ARGV[1], 1, true) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
    "return 0";
const char *kDelete =
    "local v = redis.call('GET', KEYS[1]) "
    "if v and string.find(v, ARGV[1], 1, true) then return redis.call('DEL', KEYS[1]) end "
    "return 0";
// ARGV[1] the exact value seen (a dead holder's), ARGV[2] ours, ARGV[3] the expiry in ms.
const char *kTakeOver =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return "
    "1 end "
    "return 0";

struct ReplyFree {
  void operator()(redisReply *r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;
struct CtxFree {
  void operator()(redisContext *c) const { redisFree(c); }
};
using Ctx = std::unique_ptr<redisContext, CtxFree>;

class RedisStore : public MetadataStore {
 public:
  explicit RedisStore(RedisOptions o) : o_(std::move(o)) {
    seg_prefix_ = o_.prefix + "/segments/";
    key_ = seg_prefix_ + o_.self_name;
  }
  ~RedisStore() override { unpublish(); }

  Status publish(const Descriptor &d) override {
    std::string js = d.to_json();
    std::lock_guard<std::mutex> w(write_mu_);
    latest_ = js;
    incarnation_ = d.incarnation;
    mark_ = std::string("\"incarnation\":\"") + hex::u64(d.incarnation) + "\"";
    Status st = claimed_ ? update_locked() : claim_locked();
    if (st.ok() && !claimed_) {
      claimed_ = true;
      std::lock_guard<std::mutex> lk(stop_mu_);
      if (!stop_ && !refresher_.joinable()) refresher_ = std::thread([this] { refresh_loop(); });
    }
    return st;
  }

  void unpublish() override {
    {
      std::lock_guard<std::mutex> lk(stop_mu_);
      if (stop_) return;
      stop_ = true;
    }
    stop_cv_.notify_all();
    if (refresher_.joinable()) refresher_.join();
    std::lock_guard<std::mutex> w(write_mu_);
    if (claimed_) {
      Reply r;
      Status st = command({"EVAL", kDelete, "1", key_, mark_}, o_.timeout_ms, &r);
      if (!st.ok())
        MC_LOGW("metadata: withdrawing " << key_ << " failed (it expires on its own): " << st.message());
      claimed_ = false;
    }
  }

  Status fetch(const std::string &name, uint32_t timeout_ms, Descriptor *out) override {
    if (name.empty()) return Err(MC_ERR_INVALID_ARG, "empty segment name");
    Reply r;
    Status st = command({"GET", seg_prefix_ + name}, timeout_ms, &r);
    if (!st.ok()) return st;
    if (r->type == REDIS_REPLY_NIL)
      return Err(MC_ERR_NOT_FOUND, "no segment named \"" + name + "\" is published in " + o_.url +
                                       " (never published, withdrawn, or its engine died)");
    if (r->type != REDIS_REPLY_STRING)
      return Err(MC_ERR_METADATA,
                 "the store " + o_.url + " holds something that is not a string under \"" + name + "\"");
    st = Descriptor::from_json(std::string(r->str, r->len), out, name);
    if (!st.ok())
      return Err(MC_ERR_METADATA, "the descriptor published under \"" + name + "\" in " + o_.url +
                                      " is unusable: " + st.message());
    return Status::Ok();
  }

 private:
  // ---------------------------------------------------------------- connections

  Status connect(uint32_t timeout_ms, Ctx *out) {
    struct timeval tv;
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    Ctx c(redisConnectWithTimeout(o_.host.c_str(), o_.port, tv));
    if (!c) return Err(MC_ERR_NO_MEMORY, "cannot allocate a redis context");
    if (c->err)
      return Err(MC_ERR_METADATA, "the metadata store " + o_.url + " is unreachable (" + c->errstr +
                                      "); opening segments by name fails until it is back");
    redisSetTimeout(c.get(), tv);
    if (o_.db != 0) {
      Reply r(static_cast<redisReply *>(redisCommand(c.get(), "SELECT %d", o_.db)));
      if (!r || r->type == REDIS_REPLY_ERROR)
        return Err(MC_ERR_METADATA, "redis at " + o_.url + " refused SELECT " + std::to_string(o_.db) +
                                        (r ? std::string(": ") + r->str : std::string()));
    }
    *out = std::move(c);
    return Status::Ok();
  }

  // One command on a pooled connection (a new one when none is idle). A connection that failed
  // is dropped; when it was an idle one (the server may have restarted since), the command is
  // tried once more on a fresh connection. Every command here is idempotent.
  Status command(const std::vector<std::string> &args, uint32_t timeout_ms, Reply *out) {
    uint64_t deadline = now_ms() + timeout_ms;
    Ctx c;
    {
      std::lock_guard<std::mutex> lk(pool_mu_);
      if (!pool_.empty()) {
        c = std::move(pool_.back());
        pool_.pop_back();
      }
    }
    bool pooled = static_cast<bool>(c);
    std::vector<const char *> argv;
    std::vector<size_t> lens;
    for (auto &a : args) argv.push_back(a.data()), lens.push_back(a.size());
    Reply r;
    for (;;) {
      uint64_t now = now_ms();
      uint32_t left = now < deadline ? static_cast<uint32_t>(deadline - now) : 1;
      if (!c) {
        Status st = connect(left, &c);
        if (!st.ok()) return st;
      } else {
        struct timeval tv;
        tv.tv_sec = left / 1000;
        tv.tv_usec = (left % 1000) * 1000;
        redisSetTimeout(c.get(), tv);
      }
      r.reset(static_cast<redisReply *>(
          redisCommandArgv(c.get(), static_cast<int>(args.size()), argv.data(), lens.data())));
      if (r) break;
      std::string why = c->errstr[0] ? c->errstr : "connection lost";
      c.reset();
      if (!pooled || now_ms() >= deadline)
        return Err(MC_ERR_METADATA, "the metadata store " + o_.url + " is unreachable (" + args[0] + ": " +
                                        why + "); opening segments by name fails until it is back");
      pooled = false;
    }
    {
      std::lock_guard<std::mutex> lk(pool_mu_);
      if (pool_.size() < 4) pool_.push_back(std::move(c));
    }
    if (r->type == REDIS_REPLY_ERROR)
      return Err(MC_ERR_METADATA,
                 "redis at " + o_.url + " refused " + args[0] + ": " + std::string(r->str, r->len));
    *out = std::move(r);
    return Status::Ok();
  }

  // ---------------------------------------------------------------- publishing (write_mu_ held)

  Status claim_locked() {
    std::string ttl = std::to_string(o_.ttl_ms);
    for (int attempt = 0; attempt < 4; attempt++) {
      Reply r;
      Status st = command({"SET", key_, latest_, "NX", "PX", ttl}, o_.timeout_ms, &r);
      if (!st.ok()) return st;
      if (r->type == REDIS_REPLY_STATUS) return Status::Ok();  // +OK: created
      st = command({"GET", key_}, o_.timeout_ms, &r);
      if (!st.ok()) return st;
      if (r->type != REDIS_REPLY_STRING) continue;  // it expired meanwhile
      std::string old(r->str, r->len);
      StoredHolder held;
      if (!read_holder(old, o_.self_name, &held).ok() || held.incarnation != incarnation_) {
        std::string who;
        if (holder_alive(old, o_.timeout_ms, o_.auth_token, &who))
          return Err(MC_ERR_EXISTS, "the name \"" + o_.self_name + "\" is held in " + o_.url + " by " + who +
                                        ", which is alive; stop it or pick another name");
        MC_LOGI("metadata: taking over \"" << o_.self_name << "\" from " << who << ", which does not answer");
      }
      st = command({"EVAL", kTakeOver, "1", key_, old, latest_, ttl}, o_.timeout_ms, &r);
      if (!st.ok()) return st;
      if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) return Status::Ok();
    }
    return Err(MC_ERR_METADATA,
               "could not claim \"" + o_.self_name + "\" in " + o_.url + ": the key kept changing under us");
  }

  Status update_locked() {
    Reply r;
    Status st =
        command({"EVAL", kUpdate, "1", key_, mark_, latest_, std::to_string(o_.ttl_ms)}, o_.timeout_ms, &r);
    if (!st.ok()) return st;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) return Status::Ok();
    // Missing (expired, or the server restarted empty) or held by someone else: claim again.
    return claim_locked();
  }

  void refresh_loop() {
    uint32_t period = std::max<uint32_t>(100, o_.ttl_ms / 3);
    bool healthy = true;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(stop_mu_);
        if (stop_cv_.wait_for(lk, std::chrono::milliseconds(period), [this] { return stop_; })) return;
      }
      std::lock_guard<std::mutex> w(write_mu_);
      if (!claimed_) continue;
      Reply r;
      Status st = command({"EVAL", kRefresh, "1", key_, mark_, std::to_string(o_.ttl_ms)}, o_.timeout_ms, &r);
      bool republished = false;
      if (st.ok() && !(r->type == REDIS_REPLY_INTEGER && r->integer == 1)) {
        st = claim_locked();
        republished = st.ok();
      }
      if (st.code() == MC_ERR_EXISTS) {
        // Another live engine holds the name now (we were stopped or cut off past our TTL). Stop
        // refreshing; the next publish of ours tries to claim it again.
        MC_LOGE("metadata: lost the name: " << st.message());
        claimed_ = false;
        healthy = true;
      } else if (!st.ok()) {
        if (healthy)
          MC_LOGW("metadata: cannot keep \"" << o_.self_name << "\" published: " << st.message()
                                             << " (retrying every " << period << " ms)");
        healthy = false;
      } else if (!healthy || republished) {
        MC_LOGI("metadata: \"" << o_.self_name << "\" is published again in " << o_.url);
        healthy = true;
      }
    }
  }

  RedisOptions o_;
  std::string seg_prefix_, key_;

  std::mutex pool_mu_;
  std::vector<Ctx> pool_;  // guarded by pool_mu_: idle connections

  // This store's writes of its own key. Held across the store calls that do them (publish, the
  // refresh tick, unpublish), so that an older descriptor never overwrites a newer one; fetch
  // never takes it.
  std::mutex write_mu_;
  std::string latest_;        // guarded by write_mu_: the descriptor to publish
  std::string mark_;          // guarded by write_mu_: "incarnation":"<hex>", our ownership mark
  uint64_t incarnation_ = 0;  // guarded by write_mu_: ours, in what we publish
  bool claimed_ = false;      // guarded by write_mu_: the first claim succeeded

  std::mutex stop_mu_;  // guards stop_ and the refresh thread's start
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread refresher_;
};

}  // namespace

Status make_redis_store(const RedisOptions &o, std::unique_ptr<MetadataStore> *out) {
  *out = std::make_unique<RedisStore>(o);
  return Status::Ok();
}

}  // namespace mc
