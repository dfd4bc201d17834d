// The C shim for mc_heap_*: argument checks, the exception barrier, the last-error text.
#include <mc.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include "api/api_util.h"
#include "memheap/memheap.h"

struct mc_heap {
  std::unique_ptr<mc::MemHeap> heap;
};

namespace {

mc_status_t Fail(const char *fn, const mc::Status &s) {
  return mc::api::fail(s.code(), std::string(fn) + ": " + s.message());
}

// Copies one field of src into dst when the caller's struct (dst->size bytes) is large enough to
// hold it, so callers built against an older, shorter mc_heap_stats_t keep working.
template <class T>
void CopyIfFits(mc_heap_stats_t *dst, size_t offset, const T &value) {
  if (dst->size >= offset + sizeof(T))
    std::memcpy(reinterpret_cast<unsigned char *>(dst) + offset, &value, sizeof(T));
}

// The smallest struct accepted: size plus capacity, the first field that existed.
constexpr size_t kMinStatsSize = offsetof(mc_heap_stats_t, capacity) + sizeof(uint64_t);

}  // namespace

extern "C" {

MC_API mc_status_t mc_heap_create(uint64_t capacity, mc_heap_t **out) {
  MC_API_TRY
  if (out == nullptr)
    return mc::api::fail(MC_ERR_INVALID_ARG,
                         "mc_heap_create: out is NULL; pass the address of an mc_heap_t * "
                         "that receives the heap");
  if (capacity == 0)
    return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_create: capacity is 0; a heap needs at least 1 byte");
  std::unique_ptr<mc::MemHeap> heap;
  const mc::Status s = mc::MemHeap::create(capacity, &heap);
  if (!s.ok()) return Fail("mc_heap_create", s);
  auto h = std::make_unique<mc_heap>();
  h->heap = std::move(heap);
  *out = h.release();  // owned by the caller until mc_heap_destroy
  return mc::api::ok();
  MC_API_CATCH("mc_heap_create")
}

MC_API mc_status_t mc_heap_alloc(mc_heap_t *heap, uint64_t size, uint64_t align, uint64_t *offset) {
  MC_API_TRY
  if (heap == nullptr) return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_alloc: heap is NULL");
  if (offset == nullptr)
    return mc::api::fail(MC_ERR_INVALID_ARG,
                         "mc_heap_alloc: offset is NULL; pass the address of a uint64_t that "
                         "receives the offset");
  if (size == 0)
    return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_alloc: size is 0; ask for at least 1 byte");
  if (align == 0 || (align & (align - 1)) != 0)
    return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_alloc: align " + std::to_string(align) +
                                                 " is not a power of two (1, 2, 4, ...)");
  // TryAlloc writes *offset only on success, and builds its reason text only on failure.
  std::string why;
  const mc_status_t c = heap->heap->try_alloc(size, align, offset, &why);
  if (c != MC_OK) [[unlikely]]
    return mc::api::fail(c, "mc_heap_alloc: " + why);
  return mc::api::ok();
  MC_API_CATCH("mc_heap_alloc")
}

MC_API mc_status_t mc_heap_free(mc_heap_t *heap, uint64_t offset) {
  MC_API_TRY
  if (heap == nullptr) return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_free: heap is NULL");
  std::string why;
  const mc_status_t c = heap->heap->try_free(offset, &why);
  if (c != MC_OK) [[unlikely]]
    return mc::api::fail(c, "mc_heap_free: " + why);
  return mc::api::ok();
  MC_API_CATCH("mc_heap_free")
}

MC_API mc_status_t mc_heap_stats(const mc_heap_t *heap, mc_heap_stats_t *stats) {
  MC_API_TRY
  if (heap == nullptr) return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_stats: heap is NULL");
  if (stats == nullptr) return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_stats: stats is NULL");
  if (stats->size < kMinStatsSize)
    return mc::api::fail(MC_ERR_INVALID_ARG, "mc_heap_stats: stats->size is " + std::to_string(stats->size) +
                                                 "; set it to sizeof(mc_heap_stats_t) (at least " +
                                                 std::to_string(kMinStatsSize) + ")");
  const mc::MemHeap::Stats s = heap->heap->stats();
  CopyIfFits(stats, offsetof(mc_heap_stats_t, capacity), s.capacity);
  CopyIfFits(stats, offsetof(mc_heap_stats_t, used), s.used);
  CopyIfFits(stats, offsetof(mc_heap_stats_t, free), s.free);
  CopyIfFits(stats, offsetof(mc_heap_stats_t, largest_free), s.largest_free);
  CopyIfFits(stats, offsetof(mc_heap_stats_t, allocations), s.allocations);
  return mc::api::ok();
  MC_API_CATCH("mc_heap_stats")
}

MC_API void mc_heap_destroy(mc_heap_t *heap) {
  // Takes back the ownership handed out by mc_heap_create. Destruction only frees bookkeeping
  // and cannot throw; the memory the offsets index belongs to the caller and is untouched.
  std::unique_ptr<mc_heap> owned(heap);
}

}  // extern "C"
