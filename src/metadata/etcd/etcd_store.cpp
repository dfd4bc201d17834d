/*
 * The etcd metadata store.
 *
 * Why libcurl and the v3 HTTP/JSON gateway: Debian packages no C or C++ client for etcd's v3 API
 * (the maintained clients are Go; the C++ ones need gRPC and protobuf code generation and are not
 * packaged), and the v2 HTTP API is off by default since etcd 3.4. Every etcd 3.x serves the v3
 * API as HTTP/JSON through its gRPC gateway, and libcurl is the HTTP client every distribution
 * ships, with per-request timeouts, connection reuse and a multi interface that a watch stream
 * can be woken out of. etcd 3.4 serves it under /v3/ (not /v3beta or /v3alpha); keys and values
 * are base64, 64-bit numbers are JSON strings, and proto3 leaves out fields at their default
 * (a failed transaction has no "succeeded": false, a lost lease's keep-alive no "TTL").
 *
 * Layout: the descriptor (proto/descriptor.h, versioned JSON) is the value of
 * <prefix>/segments/<name>, attached to a lease of this engine with a TTL of metadata_ttl_ms
 * rounded up to whole seconds. What each operation sends:
 *   claim (first publish)  txn: create_revision == 0 ? put(key, lease) : range(key). When the
 *                          key exists, its holder is health-probed (control PING to its "tcp"
 *                          address); a holder that is silent, refuses, or answers with another
 *                          incarnation is dead: txn mod_revision == seen ? put : retry.
 *   update (later ones)    txn: lease == ours ? put(key, lease) : nothing; a failure (the key
 *                          expired, the store lost its data, someone took the name) claims again.
 *   keep-alive thread      every ttl/3: /v3/lease/keepalive, then the same lease compare with an
 *                          empty put. A lease the store no longer knows (TTL absent) or a missing
 *                          key means the store lost them: grant a new lease and claim again.
 *   fetch                  the watch cache if it is in sync, else /v3/kv/range.
 *   watch thread           /v3/watch over <prefix>/segments/ (started by the first fetch). It
 *                          fills a cache of every descriptor under the prefix, so peers see a
 *                          restarted engine's new incarnation without polling. The cache is
 *                          served only while the watch stream is up; it is emptied whenever the
 *                          stream is (re)created or lost, so a store that went away is noticed by
 *                          the next fetch (MC_ERR_METADATA), never masked by stale entries.
 *   unpublish              stop and join both threads, then /v3/lease/revoke (deletes the key
 *                          only if it is still under our lease).
 */
#include "util/hex.h"
#include "metadata/etcd/etcd_store.h"

#include <curl/curl.h>

#include <atomic>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "util/log.h"
#include "util/net.h"

namespace mc {
namespace {

using nlohmann::json;

constexpr int kGrpcNotFound = 5;  // "etcdserver: requested lease not found"

std::string b64_encode(const std::string &in) {
  static const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

bool b64_decode(const std::string &in, std::string *out) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

// The gateway writes int64 fields as strings; accept numbers too.
int64_t jint(const json &j, const char *key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const json &v = j[key];
  try {
    if (v.is_string()) return std::stoll(v.get<std::string>());
    if (v.is_number_integer()) return v.get<int64_t>();
  } catch (...) {
  }
  return 0;
}

size_t append_cb(char *p, size_t sz, size_t n, void *user) {
  static_cast<std::string *>(user)->append(p, sz * n);
  return sz * n;
}

struct CurlFree {
  void operator()(CURL *c) const { curl_easy_cleanup(c); }
};
using CurlPtr = std::unique_ptr<CURL, CurlFree>;
struct SlistFree {
  void operator()(curl_slist *l) const { curl_slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistFree>;

class EtcdStore : public MetadataStore {
 public:
  explicit EtcdStore(EtcdOptions o) : o_(std::move(o)) {
    seg_prefix_ = o_.prefix + "/segments/";
    key_ = seg_prefix_ + o_.self_name;
    lease_ttl_s_ = std::max<uint32_t>(1, (o_.ttl_ms + 999) / 1000);
    headers_.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
  }
  ~EtcdStore() override { unpublish(); }

  Status publish(const Descriptor &d) override {
    std::string js = d.to_json();
    std::lock_guard<std::mutex> w(write_mu_);
    latest_ = js;
    incarnation_ = d.incarnation;
    Status st;
    try {
      st = claimed_ ? update_locked() : claim_locked();
    } catch (const std::exception &e) {  // an answer of an unexpected shape
      st = Err(MC_ERR_METADATA, std::string("unexpected answer from ") + o_.url + ": " + e.what());
    }
    if (st.ok() && !claimed_) {
      claimed_ = true;
      std::lock_guard<std::mutex> lk(stop_mu_);
      if (!stop_ && !keeper_.joinable()) keeper_ = std::thread([this] { keep_loop(); });
    }
    return st;
  }

  void unpublish() override {
    {
      std::lock_guard<std::mutex> lk(stop_mu_);
      if (stop_) return;
      stop_ = true;
      if (multi_) curl_multi_wakeup(multi_);
    }
    stop_cv_.notify_all();
    if (keeper_.joinable()) keeper_.join();
    if (watcher_.joinable()) watcher_.join();
    if (multi_) curl_multi_cleanup(multi_), multi_ = nullptr;
    std::lock_guard<std::mutex> w(write_mu_);
    if (lease_ != 0) {
      // Revoking deletes the key with it, but only while the key is still under our lease.
      json r;
      Status st = call("/v3/lease/revoke", json{{"ID", std::to_string(lease_)}}, o_.timeout_ms, &r);
      if (!st.ok())
        MC_LOGW("metadata: withdrawing " << key_ << " failed (it expires with its lease): " << st.message());
      lease_ = 0;
    }
    claimed_ = false;
  }

  Status fetch(const std::string &name, uint32_t timeout_ms, Descriptor *out) override {
    try {
      return fetch_impl(name, timeout_ms, out);
    } catch (const std::exception &e) {  // an answer of an unexpected shape
      return Err(MC_ERR_METADATA, std::string("unexpected answer from ") + o_.url + ": " + e.what());
    }
  }

 private:
  Status fetch_impl(const std::string &name, uint32_t timeout_ms, Descriptor *out) {
    if (name.empty()) return Err(MC_ERR_INVALID_ARG, "empty segment name");
    start_watch();
    uint64_t epoch;
    bool synced;
    std::string text;
    bool cached = false;
    {
      std::lock_guard<std::mutex> lk(cache_mu_);
      synced = synced_;
      epoch = epoch_;
      if (synced) {
        auto it = cache_.find(name);
        if (it != cache_.end()) {
          if (it->second.deleted) return not_found(name);
          text = it->second.json;
          cached = true;
        }
      }
    }
    if (!cached) {
      std::string key = seg_prefix_ + name;
      json r;
      Status st = call("/v3/kv/range", json{{"key", b64_encode(key)}}, timeout_ms, &r);
      if (!st.ok()) return st;
      int64_t rev = jint(r.value("header", json::object()), "revision");
      bool found = r.contains("kvs") && r["kvs"].is_array() && !r["kvs"].empty();
      int64_t mod = 0;
      if (found) {
        const json &kv = r["kvs"][0];
        mod = jint(kv, "mod_revision");
        if (!b64_decode(kv.value("value", std::string()), &text))
          return Err(MC_ERR_METADATA, "the store " + o_.url + " returned a value that is not base64");
      }
      if (synced) {
        std::lock_guard<std::mutex> lk(cache_mu_);
        if (synced_ && epoch_ == epoch) cache_put_locked(name, found ? mod : rev, !found, text);
      }
      if (!found) return not_found(name);
    }
    Status st = Descriptor::from_json(text, out, name);
    if (!st.ok())
      return Err(MC_ERR_METADATA, "the descriptor published under \"" + name + "\" in " + o_.url +
                                      " is unusable: " + st.message());
    return Status::Ok();
  }

  struct Entry {
    std::string json;
    int64_t rev = 0;
    bool deleted = false;
  };

  Status not_found(const std::string &name) const {
    return Err(MC_ERR_NOT_FOUND, "no segment named \"" + name + "\" is published in " + o_.url +
                                     " (never published, withdrawn, or its engine died)");
  }

  // ---------------------------------------------------------------- HTTP

  CurlPtr take_handle() {
    {
      std::lock_guard<std::mutex> lk(pool_mu_);
      if (!pool_.empty()) {
        CurlPtr h = std::move(pool_.back());
        pool_.pop_back();
        return h;
      }
    }
    return CurlPtr(curl_easy_init());
  }
  void give_handle(CurlPtr h) {
    std::lock_guard<std::mutex> lk(pool_mu_);
    if (pool_.size() < 8) pool_.push_back(std::move(h));
  }

  // One POST of req to path, tried on each endpoint in turn until one answers; the whole call
  // stays within timeout_ms. A gRPC error in the answer becomes MC_ERR_METADATA with its code in
  // *grpc_code.
  Status call(const std::string &path, const json &req, uint32_t timeout_ms, json *resp,
              int *grpc_code = nullptr) {
    if (grpc_code) *grpc_code = 0;
    std::string body = req.dump();
    uint64_t deadline = now_ms() + timeout_ms;
    size_t n = o_.endpoints.size();
    size_t first = ep_.load(std::memory_order_relaxed) % n;
    std::string why;
    CurlPtr h = take_handle();
    if (!h) return Err(MC_ERR_NO_MEMORY, "curl_easy_init failed");
    for (size_t k = 0; k < n; k++) {
      uint64_t now = now_ms();
      if (now >= deadline) break;
      size_t i = (first + k) % n;
      std::string out;
      std::string url = o_.endpoints[i] + path;
      CURL *c = h.get();
      curl_easy_reset(c);
      curl_easy_setopt(c, CURLOPT_URL, url.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
      curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers_.get());
      curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(deadline - now));
      curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_cb);
      curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
      CURLcode rc = curl_easy_perform(c);
      if (rc != CURLE_OK) {
        why = o_.endpoints[i] + ": " + curl_easy_strerror(rc);
        continue;
      }
      ep_.store(i, std::memory_order_relaxed);
      long http = 0;
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
      give_handle(std::move(h));
      json j = json::parse(out, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return Err(MC_ERR_METADATA, o_.endpoints[i] + path + " answered HTTP " + std::to_string(http) +
                                        " with something that is not JSON; is it etcd v3.4 or newer?");
      // Unary calls put the error at the top level, streaming ones under "error".
      const json *err = j.contains("error") && j["error"].is_object() ? &j["error"] : nullptr;
      if (http != 200 || err || j.contains("code")) {
        const json &e = err ? *err : j;
        int code = static_cast<int>(jint(e, "code") ? jint(e, "code") : jint(e, "grpc_code"));
        if (grpc_code) *grpc_code = code;
        std::string msg =
            e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : j.dump();
        return Err(MC_ERR_METADATA, "etcd at " + o_.endpoints[i] + " refused " + path + ": " + msg);
      }
      *resp = std::move(j);
      return Status::Ok();
    }
    give_handle(std::move(h));
    return Err(MC_ERR_METADATA, "the metadata store " + o_.url + " is unreachable (" +
                                    (why.empty() ? "no time left" : why) +
                                    "); opening segments by name fails until it is back");
  }

  // ---------------------------------------------------------------- publishing (write_mu_ held)

  json put_op(const std::string &value) const {
    return json{
        {"request_put",
         json{{"key", b64_encode(key_)}, {"value", b64_encode(value)}, {"lease", std::to_string(lease_)}}}};
  }
  json range_op() const { return json{{"request_range", json{{"key", b64_encode(key_)}}}}; }
  json compare(const char *target, const char *field, int64_t v) const {
    return json{
        {"key", b64_encode(key_)}, {"result", "EQUAL"}, {"target", target}, {field, std::to_string(v)}};
  }

  Status grant_locked() {
    json r;
    Status st = call("/v3/lease/grant", json{{"TTL", std::to_string(lease_ttl_s_)}}, o_.timeout_ms, &r);
    if (!st.ok()) return st;
    lease_ = jint(r, "ID");
    if (lease_ == 0) return Err(MC_ERR_METADATA, "etcd at " + o_.url + " granted no lease: " + r.dump());
    return Status::Ok();
  }

  // Create-if-absent; a dead holder's key is taken over; a live one's is MC_ERR_EXISTS.
  Status claim_locked() {
    for (int attempt = 0; attempt < 4; attempt++) {
      Status st;
      if (lease_ == 0 && !(st = grant_locked()).ok()) return st;
      json r;
      int code = 0;
      json txn{{"compare", json::array({compare("CREATE", "create_revision", 0)})},
               {"success", json::array({put_op(latest_)})},
               {"failure", json::array({range_op()})}};
      st = call("/v3/kv/txn", txn, o_.timeout_ms, &r, &code);
      if (code == kGrpcNotFound) {  // our lease is gone (the store lost it): take a new one
        lease_ = 0;
        continue;
      }
      if (!st.ok()) return st;
      if (r.value("succeeded", false)) return Status::Ok();
      json kvs = r["responses"][0]["response_range"].value("kvs", json::array());
      if (!kvs.is_array() || kvs.empty()) continue;  // it vanished meanwhile
      std::string old;
      b64_decode(kvs[0].value("value", std::string()), &old);
      int64_t mod = jint(kvs[0], "mod_revision");
      StoredHolder held;
      if (!read_holder(old, o_.self_name, &held).ok() || held.incarnation != incarnation_) {
        std::string who;
        if (holder_alive(old, o_.timeout_ms, o_.auth_token, &who))
          return Err(MC_ERR_EXISTS, "the name \"" + o_.self_name + "\" is held in " + o_.url + " by " + who +
                                        ", which is alive; stop it or pick another name");
        MC_LOGI("metadata: taking over \"" << o_.self_name << "\" from " << who << ", which does not answer");
      }
      json take{{"compare", json::array({compare("MOD", "mod_revision", mod)})},
                {"success", json::array({put_op(latest_)})},
                {"failure", json::array()}};
      st = call("/v3/kv/txn", take, o_.timeout_ms, &r, &code);
      if (code == kGrpcNotFound) {
        lease_ = 0;
        continue;
      }
      if (!st.ok()) return st;
      if (r.value("succeeded", false)) return Status::Ok();
    }
    return Err(MC_ERR_METADATA,
               "could not claim \"" + o_.self_name + "\" in " + o_.url + ": the key kept changing under us");
  }

  // Puts latest_ while the key is still under our lease (empty put: only checks that).
  Status update_locked(bool check_only = false) {
    if (lease_ == 0) return claim_locked();
    json r;
    int code = 0;
    json txn{{"compare", json::array({compare("LEASE", "lease", lease_)})},
             {"success", check_only ? json::array() : json::array({put_op(latest_)})},
             {"failure", json::array()}};
    Status st = call("/v3/kv/txn", txn, o_.timeout_ms, &r, &code);
    if (code == kGrpcNotFound)
      lease_ = 0;
    else if (!st.ok())
      return st;
    else if (r.value("succeeded", false))
      return Status::Ok();
    // The key expired, the store lost it, or another engine holds it now: claim it again.
    return claim_locked();
  }

  void keep_loop() {
    uint32_t period = std::max<uint32_t>(100, o_.ttl_ms / 3);
    bool healthy = true;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(stop_mu_);
        if (stop_cv_.wait_for(lk, std::chrono::milliseconds(period), [this] { return stop_; })) return;
      }
      std::lock_guard<std::mutex> w(write_mu_);
      if (!claimed_) continue;
      Status st;
      bool lost_lease = false;
      try {
        if (lease_ != 0) {
          json r;
          st = call("/v3/lease/keepalive", json{{"ID", std::to_string(lease_)}}, o_.timeout_ms, &r);
          if (st.ok() && jint(r.value("result", json::object()), "TTL") <= 0) {
            lost_lease = true;  // the store no longer knows our lease (expired or data lost)
            lease_ = 0;
          }
        }
        if (st.ok()) st = update_locked(/*check_only=*/true);
      } catch (const std::exception &e) {  // a reply of an unexpected shape: try again next tick
        st = Err(MC_ERR_METADATA, std::string("unexpected answer from etcd: ") + e.what());
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
      } else if (!healthy || lost_lease) {
        MC_LOGI("metadata: \"" << o_.self_name << "\" is published again in " << o_.url);
        healthy = true;
      }
    }
  }

  // ---------------------------------------------------------------- watch cache

  void start_watch() {
    std::lock_guard<std::mutex> lk(stop_mu_);
    if (stop_ || watcher_.joinable()) return;
    multi_ = curl_multi_init();
    if (!multi_) return;  // fetches still work, uncached
    watcher_ = std::thread([this] { watch_loop(); });
  }

  void cache_put_locked(const std::string &name, int64_t rev, bool deleted, const std::string &text) {
    auto it = cache_.find(name);
    if (it != cache_.end() && it->second.rev >= rev) return;
    if (cache_.size() > 100000) cache_.clear(), epoch_++;  // bound tombstones of unknown names
    cache_[name] = Entry{deleted ? std::string() : text, rev, deleted};
  }

  void set_synced(bool on) {
    std::lock_guard<std::mutex> lk(cache_mu_);
    cache_.clear();
    epoch_++;
    synced_ = on;
  }

  struct WatchCtx {
    EtcdStore *self;
    std::string buf;
    bool created = false;
    bool cancel = false;
  };

  static size_t watch_cb(char *p, size_t sz, size_t n, void *user) {
    auto *ctx = static_cast<WatchCtx *>(user);
    ctx->buf.append(p, sz * n);
    size_t nl;
    while ((nl = ctx->buf.find('\n')) != std::string::npos) {
      std::string line = ctx->buf.substr(0, nl);
      ctx->buf.erase(0, nl + 1);
      try {
        ctx->self->watch_message(line, ctx);
      } catch (const std::exception &) {  // an event of an unexpected shape: resync
        ctx->cancel = true;
      }
    }
    if (ctx->buf.size() > (64u << 20)) ctx->cancel = true;
    return ctx->cancel ? 0 : sz * n;
  }

  void watch_message(const std::string &line, WatchCtx *ctx) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("result") || !j["result"].is_object()) {
      ctx->cancel = true;  // an error object or junk: start over
      return;
    }
    const json &r = j["result"];
    if (r.value("canceled", false)) {
      ctx->cancel = true;
      return;
    }
    if (r.value("created", false)) {
      ctx->created = true;
      set_synced(true);
    }
    if (!r.contains("events") || !r["events"].is_array()) return;
    std::lock_guard<std::mutex> lk(cache_mu_);
    for (auto &ev : r["events"]) {
      if (!ev.is_object() || !ev.contains("kv") || !ev["kv"].is_object()) continue;
      const json &kv = ev["kv"];
      std::string key, value;
      if (!b64_decode(kv.value("key", std::string()), &key) || key.rfind(seg_prefix_, 0) != 0) continue;
      bool del = ev.value("type", std::string()) == "DELETE";
      if (!del && !b64_decode(kv.value("value", std::string()), &value)) continue;
      cache_put_locked(key.substr(seg_prefix_.size()), jint(kv, "mod_revision"), del, value);
    }
  }

  bool stopping() {
    std::lock_guard<std::mutex> lk(stop_mu_);
    return stop_;
  }

  void watch_loop() {
    std::string prefix_end = seg_prefix_;
    prefix_end.back() = static_cast<char>(prefix_end.back() + 1);  // '/' + 1: the prefix's range end
    std::string body = json{{"create_request",
                             json{{"key", b64_encode(seg_prefix_)}, {"range_end", b64_encode(prefix_end)}}}}
                           .dump();
    size_t ep = ep_.load(std::memory_order_relaxed);
    bool warned = false;
    while (!stopping()) {
      std::string url = o_.endpoints[ep % o_.endpoints.size()] + "/v3/watch";
      CurlPtr h(curl_easy_init());
      if (!h) break;
      WatchCtx ctx{this, {}, false, false};
      CURL *c = h.get();
      curl_easy_setopt(c, CURLOPT_URL, url.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers_.get());
      curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o_.timeout_ms));
      curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
      // A server that vanishes without closing the stream is noticed by TCP keep-alive.
      curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
      curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 2L);
      curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 1L);
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_cb);
      curl_easy_setopt(c, CURLOPT_WRITEDATA, &ctx);
      curl_multi_add_handle(multi_, c);
      int running = 1;
      while (running && !ctx.cancel && !stopping()) {
        if (curl_multi_perform(multi_, &running) != CURLM_OK) break;
        if (running) curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
      }
      curl_multi_remove_handle(multi_, c);
      set_synced(false);
      if (!ctx.created) {
        if (!warned) MC_LOGI("metadata: no watch on " << url << "; fetches go to the store until it is back");
        warned = true;
        ep++;
      } else {
        warned = false;
      }
      std::unique_lock<std::mutex> lk(stop_mu_);
      stop_cv_.wait_for(lk, std::chrono::milliseconds(ctx.created ? 50 : 250), [this] { return stop_; });
    }
  }

  EtcdOptions o_;
  std::string seg_prefix_, key_;
  uint32_t lease_ttl_s_;
  SlistPtr headers_;           // immutable after construction
  std::atomic<size_t> ep_{0};  // the endpoint that answered last

  std::mutex pool_mu_;
  std::vector<CurlPtr> pool_;  // guarded by pool_mu_: idle handles, each keeping its connection

  // This store's writes of its own key. Held across the store calls that do them (publish, the
  // keep-alive tick, unpublish), so that an older descriptor never overwrites a newer one; fetch
  // never takes it.
  std::mutex write_mu_;
  std::string latest_;        // guarded by write_mu_: the descriptor to publish
  uint64_t incarnation_ = 0;  // guarded by write_mu_: ours, in what we publish
  int64_t lease_ = 0;         // guarded by write_mu_: 0 = none
  bool claimed_ = false;      // guarded by write_mu_: the first claim succeeded

  std::mutex stop_mu_;  // guards stop_, the threads' start, multi_'s creation
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread keeper_, watcher_;
  CURLM *multi_ = nullptr;  // the watch thread's; curl_multi_wakeup is safe from any thread

  std::mutex cache_mu_;  // guards cache_, synced_, epoch_
  std::unordered_map<std::string, Entry> cache_;
  bool synced_ = false;  // the watch stream is up: cache_ is current
  uint64_t epoch_ = 0;   // bumps whenever cache_ is emptied; a fetch caches only within its epoch
};

}  // namespace

Status make_etcd_store(const EtcdOptions &o, std::unique_ptr<MetadataStore> *out) {
  static std::once_flag once;
  static CURLcode init_rc = CURLE_OK;
  std::call_once(once, [] { init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init_rc != CURLE_OK)
    return Err(MC_ERR_INTERNAL, std::string("curl_global_init failed: ") + curl_easy_strerror(init_rc));
  if (o.endpoints.empty()) return Err(MC_ERR_INVALID_ARG, "metadata store " + o.url + " names no server");
  *out = std::make_unique<EtcdStore>(o);
  return Status::Ok();
}

}  // namespace mc
