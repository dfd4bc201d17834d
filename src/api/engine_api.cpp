// The C shim: argument checks, exception barrier, last error. No engine logic here.
#include <mc.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "api/api_util.h"
#include "util/config.h"
#include "engine/engine.h"
#include "util/echo.h"

using mc::api::fail;

struct mc_config {
  mc::Config cfg;
};

struct mc_engine {
  std::shared_ptr<mc::EngineCore> core;
};

struct mc_batch {
  std::shared_ptr<mc::BatchCore> core;
};

namespace {
mc_status_t null_arg(const char *fn, const char *what) {
  return fail(MC_ERR_INVALID_ARG, std::string(fn) + ": " + what + " is NULL");
}
}  // namespace

extern "C" {

// ------------------------------------------------------------------------------ config

MC_API mc_status_t mc_config_create(mc_config_t **out) {
  MC_API_TRY
  if (!out) return null_arg("mc_config_create", "out");
  *out = new mc_config();
  return MC_OK;
  MC_API_CATCH("mc_config_create")
}

MC_API mc_status_t mc_config_set(mc_config_t *cfg, const char *key, const char *value) {
  MC_API_TRY
  if (!cfg) return null_arg("mc_config_set", "cfg");
  if (!key) return null_arg("mc_config_set", "key");
  if (!value) return null_arg("mc_config_set", "value");
  mc::Status st = cfg->cfg.set(key, value);
  if (!st.ok()) return fail(st);
  return MC_OK;
  MC_API_CATCH("mc_config_set")
}

MC_API void mc_config_destroy(mc_config_t *cfg) { delete cfg; }

// ------------------------------------------------------------------------------ engine

MC_API mc_status_t mc_engine_create(const mc_config_t *cfg, mc_engine_t **out) {
  MC_API_TRY
  if (!out) return null_arg("mc_engine_create", "out");
  mc::Config empty;
  mc::EngineOptions opts;
  mc::Status st = mc::resolve_options(cfg ? cfg->cfg : empty, &opts);
  if (!st.ok()) return fail(st);
  std::shared_ptr<mc::EngineCore> core;
  st = mc::EngineCore::create(opts, &core);
  if (!st.ok()) return fail(st.code(), "mc_engine_create: " + st.message());
  auto e = std::make_unique<mc_engine>();
  e->core = std::move(core);
  *out = e.release();
  return MC_OK;
  MC_API_CATCH("mc_engine_create")
}

MC_API void mc_engine_destroy(mc_engine_t *engine) {
  if (!engine) return;
  try {
    engine->core->shutdown();
  } catch (...) {
  }
  delete engine;
}

MC_API const char *mc_engine_name(const mc_engine_t *engine) {
  return engine ? engine->core->name().c_str() : "";
}

MC_API mc_status_t mc_engine_stats_json(mc_engine_t *engine, char *buf, size_t capacity, size_t *needed) {
  MC_API_TRY
  if (!engine) return null_arg("mc_engine_stats_json", "engine");
  if (!needed) return null_arg("mc_engine_stats_json", "needed");
  if (!buf && capacity > 0) return null_arg("mc_engine_stats_json", "buf (with capacity > 0)");
  std::string s = engine->core->stats_json();
  if (capacity < s.size() + 1) {
    *needed = s.size() + 1;
    return fail(MC_ERR_BUFFER_TOO_SMALL, "mc_engine_stats_json: needs " + std::to_string(s.size() + 1) +
                                             " bytes, got " + std::to_string(capacity));
  }
  std::memcpy(buf, s.c_str(), s.size() + 1);
  *needed = s.size() + 1;
  return MC_OK;
  MC_API_CATCH("mc_engine_stats_json")
}

// ------------------------------------------------------------------------------ buffers

MC_API mc_status_t mc_buffer_register(mc_engine_t *engine, void *addr, size_t length, const char *location) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_register", "engine");
  if (!addr) return null_arg("mc_buffer_register", "addr");
  if (length == 0) return fail(MC_ERR_INVALID_ARG, "mc_buffer_register: length must be > 0");
  mc::Status st = engine->core->register_buffer(addr, length, location);
  if (!st.ok()) return fail(st.code(), "mc_buffer_register: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_register")
}

MC_API mc_status_t mc_buffer_register_batch(mc_engine_t *engine, const mc_buffer_desc_t *bufs, size_t count) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_register_batch", "engine");
  if (!bufs) return null_arg("mc_buffer_register_batch", "bufs");
  if (count == 0) return fail(MC_ERR_INVALID_ARG, "mc_buffer_register_batch: count must be > 0");
  std::vector<mc::EngineCore::NewBuffer> nb(count);
  for (size_t i = 0; i < count; i++)
    nb[i] = {reinterpret_cast<uint64_t>(bufs[i].addr), bufs[i].length, bufs[i].location, -1};
  mc::Status st = engine->core->register_buffers(nb.data(), count);
  if (!st.ok()) return fail(st.code(), "mc_buffer_register_batch: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_register_batch")
}

MC_API mc_status_t mc_buffer_unregister_batch(mc_engine_t *engine, void *const *addrs, size_t count) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_unregister_batch", "engine");
  if (!addrs) return null_arg("mc_buffer_unregister_batch", "addrs");
  if (count == 0) return fail(MC_ERR_INVALID_ARG, "mc_buffer_unregister_batch: count must be > 0");
  mc::Status st = engine->core->unregister_buffers(addrs, count);
  if (!st.ok()) return fail(st.code(), "mc_buffer_unregister_batch: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_unregister_batch")
}

MC_API mc_status_t mc_buffer_alloc(mc_engine_t *engine, size_t length, const char *location, void **addr) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_alloc", "engine");
  if (!addr) return null_arg("mc_buffer_alloc", "addr");
  if (length == 0) return fail(MC_ERR_INVALID_ARG, "mc_buffer_alloc: length must be > 0");
  mc::Status st = engine->core->alloc_buffer(length, location, addr);
  if (!st.ok()) return fail(st.code(), "mc_buffer_alloc: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_alloc")
}

MC_API mc_status_t mc_buffer_free(mc_engine_t *engine, void *addr) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_free", "engine");
  if (!addr) return null_arg("mc_buffer_free", "addr");
  mc::Status st = engine->core->free_buffer(addr);
  if (!st.ok()) return fail(st.code(), "mc_buffer_free: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_free")
}

MC_API mc_status_t mc_buffer_unregister(mc_engine_t *engine, void *addr) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_unregister", "engine");
  if (!addr) return null_arg("mc_buffer_unregister", "addr");
  mc::Status st = engine->core->unregister_buffer(addr);
  if (!st.ok()) return fail(st.code(), "mc_buffer_unregister: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_unregister")
}

MC_API mc_status_t mc_buffer_set_access(mc_engine_t *engine, void *addr, uint32_t access) {
  MC_API_TRY
  if (!engine) return null_arg("mc_buffer_set_access", "engine");
  if (!addr) return null_arg("mc_buffer_set_access", "addr");
  mc::Status st = engine->core->set_access(addr, access);
  if (!st.ok()) return fail(st.code(), "mc_buffer_set_access: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_buffer_set_access")
}

// ------------------------------------------------------------------------------ segments

MC_API mc_status_t mc_segment_open(mc_engine_t *engine, const char *name, mc_segment_t *out) {
  MC_API_TRY
  if (!engine) return null_arg("mc_segment_open", "engine");
  if (!name) return null_arg("mc_segment_open", "name");
  if (!out) return null_arg("mc_segment_open", "out");
  size_t nlen = std::strlen(name);
  if (nlen == 0 || nlen > 255)
    return fail(MC_ERR_INVALID_ARG, "mc_segment_open: a segment name has 1 to 255 bytes, not " +
                                        std::to_string(nlen) + ": " + mc::echo(name));
  mc::Status st = engine->core->open_segment(name, out);
  if (!st.ok()) return fail(st.code(), "mc_segment_open: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_segment_open")
}

MC_API mc_status_t mc_segment_close(mc_engine_t *engine, mc_segment_t segment) {
  MC_API_TRY
  if (!engine) return null_arg("mc_segment_close", "engine");
  mc::Status st = engine->core->close_segment(segment);
  if (!st.ok()) return fail(st.code(), "mc_segment_close: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_segment_close")
}

MC_API mc_status_t mc_engine_set_segment_callback(mc_engine_t *engine, mc_segment_fn fn, void *user) {
  MC_API_TRY
  if (!engine) return null_arg("mc_engine_set_segment_callback", "engine");
  engine->core->set_segment_callback(fn, user);
  return MC_OK;
  MC_API_CATCH("mc_engine_set_segment_callback")
}

// ------------------------------------------------------------------------------ notifications

MC_API mc_status_t mc_notify_recv(mc_engine_t *engine, mc_notification_t *info, void *buf, size_t capacity) {
  MC_API_TRY
  if (!engine) return null_arg("mc_notify_recv", "engine");
  if (!info) return null_arg("mc_notify_recv", "info");
  if (info->size < sizeof(size_t))
    return fail(MC_ERR_INVALID_ARG, "mc_notify_recv: info->size must be set to sizeof(mc_notification_t)");
  if (!buf && capacity) return null_arg("mc_notify_recv", "buf (with capacity > 0)");
  std::string err;
  mc_status_t st = engine->core->notify_recv(info, buf, capacity, &err);
  if (st != MC_OK) return fail(st, "mc_notify_recv: " + err);
  return MC_OK;
  MC_API_CATCH("mc_notify_recv")
}

MC_API mc_status_t mc_engine_event_fd(mc_engine_t *engine, int *fd) {
  MC_API_TRY
  if (!engine) return null_arg("mc_engine_event_fd", "engine");
  if (!fd) return null_arg("mc_engine_event_fd", "fd");
  mc::Status st = engine->core->event_fd(fd);
  if (!st.ok()) return fail(st.code(), "mc_engine_event_fd: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_engine_event_fd")
}

MC_API mc_status_t mc_segment_query(mc_engine_t *engine, mc_segment_t segment, mc_segment_info_t *info) {
  MC_API_TRY
  if (!engine) return null_arg("mc_segment_query", "engine");
  if (!info) return null_arg("mc_segment_query", "info");
  if (info->size < sizeof(size_t))
    return fail(MC_ERR_INVALID_ARG, "mc_segment_query: info->size must be set to sizeof(mc_segment_info_t)");
  mc::Status st = engine->core->segment_query(segment, info);
  if (!st.ok()) return fail(st.code(), "mc_segment_query: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_segment_query")
}

MC_API mc_status_t mc_segment_buffers(mc_engine_t *engine, mc_segment_t segment, mc_buffer_info_t *out,
                                      size_t capacity, size_t *count) {
  MC_API_TRY
  if (!engine) return null_arg("mc_segment_buffers", "engine");
  if (!count) return null_arg("mc_segment_buffers", "count");
  if (!out && capacity > 0) return null_arg("mc_segment_buffers", "out (with capacity > 0)");
  std::vector<mc::BufferDesc> bufs;
  mc::Status st = engine->core->segment_buffers(segment, &bufs);
  if (!st.ok()) return fail(st.code(), "mc_segment_buffers: " + st.message());
  if (capacity < bufs.size()) {
    *count = bufs.size();
    return fail(MC_ERR_BUFFER_TOO_SMALL, "mc_segment_buffers: the segment has " +
                                             std::to_string(bufs.size()) + " buffers, capacity is " +
                                             std::to_string(capacity));
  }
  for (size_t i = 0; i < bufs.size(); i++) {
    out[i].addr = bufs[i].addr;
    out[i].length = bufs[i].length;
    std::memset(out[i].location, 0, sizeof out[i].location);
    std::strncpy(out[i].location, bufs[i].location.c_str(), sizeof out[i].location - 1);
  }
  *count = bufs.size();
  return MC_OK;
  MC_API_CATCH("mc_segment_buffers")
}

// ------------------------------------------------------------------------------ batches

MC_API mc_status_t mc_batch_create(mc_engine_t *engine, size_t capacity, mc_batch_t **out) {
  MC_API_TRY
  if (!engine) return null_arg("mc_batch_create", "engine");
  if (!out) return null_arg("mc_batch_create", "out");
  if (capacity == 0 || capacity > (size_t(1) << 24))
    return fail(MC_ERR_INVALID_ARG, "mc_batch_create: capacity must be 1..16777216");
  auto b = std::make_unique<mc_batch>();
  b->core = std::make_shared<mc::BatchCore>(engine->core, capacity);
  *out = b.release();
  return MC_OK;
  MC_API_CATCH("mc_batch_create")
}

MC_API mc_status_t mc_batch_submit(mc_batch_t *batch, const mc_request_t *requests, size_t count) {
  MC_API_TRY
  if (!batch) return null_arg("mc_batch_submit", "batch");
  if (!requests) return null_arg("mc_batch_submit", "requests");
  if (count == 0) return fail(MC_ERR_INVALID_ARG, "mc_batch_submit: count must be > 0");
  mc::Status st = batch->core->engine()->submit(*batch->core, requests, count);
  if (!st.ok()) return fail(st.code(), "mc_batch_submit: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_batch_submit")
}

MC_API mc_status_t mc_batch_submit_on_stream(mc_batch_t *batch, const mc_request_t *requests, size_t count,
                                             void *stream) {
  MC_API_TRY
  if (!batch) return null_arg("mc_batch_submit_on_stream", "batch");
  if (!requests) return null_arg("mc_batch_submit_on_stream", "requests");
  if (count == 0) return fail(MC_ERR_INVALID_ARG, "mc_batch_submit_on_stream: count must be > 0");
  mc::Status st = batch->core->engine()->submit_on_stream(*batch->core, requests, count, stream);
  if (!st.ok()) return fail(st.code(), "mc_batch_submit_on_stream: " + st.message());
  return MC_OK;
  MC_API_CATCH("mc_batch_submit_on_stream")
}

MC_API mc_status_t mc_batch_wait(mc_batch_t *batch, int timeout_ms) {
  MC_API_TRY
  if (!batch) return null_arg("mc_batch_wait", "batch");
  if (timeout_ms < -1)
    return fail(MC_ERR_INVALID_ARG, "mc_batch_wait: timeout_ms is " + std::to_string(timeout_ms) +
                                        "; use -1 (no limit), 0 (poll) or a positive number of ms");
  mc_status_t st = batch->core->wait(timeout_ms);
  if (st == MC_ERR_TIMEOUT)
    return fail(st, "mc_batch_wait: requests still pending after " + std::to_string(timeout_ms) + " ms");
  if (st != MC_OK)
    return fail(st, std::string("mc_batch_wait: a request failed: ") + mc_status_str(st) +
                        " (mc_batch_status gives each request's state)");
  return MC_OK;
  MC_API_CATCH("mc_batch_wait")
}

MC_API mc_status_t mc_batch_status(mc_batch_t *batch, size_t index, mc_request_status_t *out) {
  MC_API_TRY
  if (!batch) return null_arg("mc_batch_status", "batch");
  if (!out) return null_arg("mc_batch_status", "out");
  if (index >= batch->core->submitted())
    return fail(MC_ERR_INVALID_ARG, "mc_batch_status: index " + std::to_string(index) + " is past the " +
                                        std::to_string(batch->core->submitted()) + " submitted requests");
  mc::RequestSlot *s = batch->core->slot(index);
  uint32_t state = s->state.load(std::memory_order_acquire);
  out->state = state;
  out->error = state == MC_REQUEST_FAILED ? s->error.load() : MC_OK;
  out->bytes = state == MC_REQUEST_COMPLETED ? s->length : s->bytes.load();
  return MC_OK;
  MC_API_CATCH("mc_batch_status")
}

MC_API mc_status_t mc_batch_cancel(mc_batch_t *batch) {
  MC_API_TRY
  if (!batch) return null_arg("mc_batch_cancel", "batch");
  batch->core->cancel_and_wait();
  return MC_OK;
  MC_API_CATCH("mc_batch_cancel")
}

MC_API mc_status_t mc_batch_reset(mc_batch_t *batch) {
  MC_API_TRY
  if (!batch) return null_arg("mc_batch_reset", "batch");
  if (batch->core->pending())
    return fail(MC_ERR_BUSY, "mc_batch_reset: requests are pending; wait for them first");
  batch->core->reset();
  return MC_OK;
  MC_API_CATCH("mc_batch_reset")
}

MC_API mc_status_t mc_batch_destroy(mc_batch_t *batch) {
  MC_API_TRY
  if (!batch) return MC_OK;
  if (batch->core->pending())
    return fail(MC_ERR_BUSY, "mc_batch_destroy: requests are pending; wait for them first");
  batch->core->quiesce();
  delete batch;
  return MC_OK;
  MC_API_CATCH("mc_batch_destroy")
}

MC_API mc_status_t mc_transfer(mc_engine_t *engine, const mc_request_t *requests, size_t count,
                               int timeout_ms) {
  MC_API_TRY
  if (!engine) return null_arg("mc_transfer", "engine");
  if (!requests) return null_arg("mc_transfer", "requests");
  if (count == 0) return fail(MC_ERR_INVALID_ARG, "mc_transfer: count must be > 0");
  if (timeout_ms < -1)
    return fail(MC_ERR_INVALID_ARG, "mc_transfer: timeout_ms is " + std::to_string(timeout_ms) +
                                        "; use -1 (no limit), 0 (poll) or a positive number of ms");
  mc_status_t one;
  if (count == 1 && engine->core->transfer_one(requests[0], &one)) {
    if (one != MC_OK) return fail(one, std::string("mc_transfer: request 0 failed: ") + mc_status_str(one));
    return MC_OK;
  }
  mc::BatchCore b(engine->core, count);
  mc::Status st = engine->core->submit(b, requests, count);
  if (!st.ok()) return fail(st.code(), "mc_transfer: " + st.message());
  mc_status_t rc = b.wait(timeout_ms);
  if (rc == MC_ERR_TIMEOUT) {
    b.cancel_and_wait();
    return fail(MC_ERR_TIMEOUT,
                "mc_transfer: not done within " + std::to_string(timeout_ms) + " ms; the rest was canceled");
  }
  if (rc != MC_OK) {
    for (size_t i = 0; i < count; i++) {
      mc::RequestSlot *s = b.slot(i);
      if (s->state.load() == MC_REQUEST_FAILED) {
        return fail(
            rc, "mc_transfer: request " + std::to_string(i) + " failed: " + mc_status_str(s->error.load()));
      }
    }
    return fail(rc, std::string("mc_transfer: ") + mc_status_str(rc));
  }
  return MC_OK;
  MC_API_CATCH("mc_transfer")
}

}  // extern "C"
