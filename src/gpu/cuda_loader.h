// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1") and never linked, so that
// one libmc.so runs on machines with and without GPUs and builds where no CUDA header exists.
//
// The types, constants and function signatures below are the handful mc uses, declared here
// from the CUDA driver API reference (cuda.h of CUDA 12/13, "CUDA Driver API" > "Data types",
// "Memory Management", "Virtual Memory Management", "Stream/Event Management", "Peer Context
// Memory Access"). They are a stable C ABI: values are never renumbered, and functions whose
// ABI changed are exported under a versioned name (cuMemAlloc_v2, ...), which is the name we
// look up.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace mc::cuda {

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUmemGenericAllocationHandle;

enum : int {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704,
};

constexpr size_t CU_IPC_HANDLE_SIZE = 64;
struct CUipcMemHandle {
  char reserved[CU_IPC_HANDLE_SIZE];
};
constexpr unsigned CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 0x1;

// CUpointer_attribute
enum : int {
  CU_POINTER_ATTRIBUTE_CONTEXT = 1,
  CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2,
  CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
  CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE = 10,
  CU_POINTER_ATTRIBUTE_RANGE_START_ADDR = 11,
  CU_POINTER_ATTRIBUTE_RANGE_SIZE = 12,
  CU_POINTER_ATTRIBUTE_MAPPED = 13,
  CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES = 14,
  CU_POINTER_ATTRIBUTE_MAPPING_SIZE = 18,
  CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR = 19,
};
// CUmemorytype
enum : unsigned {
  CU_MEMORYTYPE_HOST = 1,
  CU_MEMORYTYPE_DEVICE = 2,
  CU_MEMORYTYPE_ARRAY = 3,
  CU_MEMORYTYPE_UNIFIED = 4
};

// CUdevice_attribute: the one mc reads (CUDA 11.7+ drivers know it; older ones fail the call).
constexpr int CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 124;
// Where a GPU sits on PCI (for NIC choice by topology).
constexpr int CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33;
constexpr int CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34;
constexpr int CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50;
// CUmemRangeHandleType for cuMemGetHandleForAddressRange.
constexpr int CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1;

constexpr unsigned CU_STREAM_NON_BLOCKING = 0x1;
constexpr unsigned CU_EVENT_DISABLE_TIMING = 0x2;
constexpr unsigned CU_MEMHOSTALLOC_PORTABLE = 0x1;
constexpr unsigned CU_MEMHOSTALLOC_DEVICEMAP = 0x2;
// cuStreamWaitValue32 flags: GEQ compares cyclically ((int32_t)(*addr - value) >= 0).
constexpr unsigned CU_STREAM_WAIT_VALUE_GEQ = 0x0;

// Virtual memory management (cuMemCreate and friends).
enum : int {
  CU_MEM_ALLOCATION_TYPE_PINNED = 1,
  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1,
  CU_MEM_LOCATION_TYPE_DEVICE = 1,
  CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
  CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0,
};
struct CUmemLocation {
  int type;
  int id;
};
struct CUmemAllocationProp {
  int type;
  int requestedHandleTypes;
  CUmemLocation location;
  void *win32HandleMetaData;
  struct {
    unsigned char compressionType;
    unsigned char gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
  } allocFlags;
};
struct CUmemAccessDesc {
  CUmemLocation location;
  int flags;
};

// The function table. X(name, symbol in libcuda, return, parameters).
#define MC_CUDA_FUNCS(X)                                                                                   \
  X(cuInit, "cuInit", (unsigned))                                                                          \
  X(cuDriverGetVersion, "cuDriverGetVersion", (int *))                                                     \
  X(cuGetErrorString, "cuGetErrorString", (CUresult, const char **))                                       \
  X(cuDeviceGetCount, "cuDeviceGetCount", (int *))                                                         \
  X(cuDeviceGet, "cuDeviceGet", (CUdevice *, int))                                                         \
  X(cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer", (int *, CUdevice, CUdevice))                           \
  X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *, int, CUdevice))                                  \
  X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *, CUdevice))                         \
  X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice))                                 \
  X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext))                                                       \
  X(cuCtxGetCurrent, "cuCtxGetCurrent", (CUcontext *))                                                     \
  X(cuCtxEnablePeerAccess, "cuCtxEnablePeerAccess", (CUcontext, unsigned))                                 \
  X(cuCtxSynchronize, "cuCtxSynchronize", ())                                                              \
  X(cuPointerGetAttribute, "cuPointerGetAttribute", (void *, int, CUdeviceptr))                            \
  X(cuMemGetAddressRange, "cuMemGetAddressRange_v2", (CUdeviceptr *, size_t *, CUdeviceptr))               \
  X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *, size_t))                                                  \
  X(cuMemFree, "cuMemFree_v2", (CUdeviceptr))                                                              \
  X(cuMemHostAlloc, "cuMemHostAlloc", (void **, size_t, unsigned))                                         \
  X(cuMemFreeHost, "cuMemFreeHost", (void *))                                                              \
  X(cuMemsetD8, "cuMemsetD8_v2", (CUdeviceptr, unsigned char, size_t))                                     \
  X(cuMemcpy, "cuMemcpy", (CUdeviceptr, CUdeviceptr, size_t))                                              \
  X(cuMemcpyAsync, "cuMemcpyAsync", (CUdeviceptr, CUdeviceptr, size_t, CUstream))                          \
  X(cuMemcpyPeerAsync, "cuMemcpyPeerAsync",                                                                \
    (CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream))                                    \
  X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr, const void *, size_t))                                  \
  X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", (void *, CUdeviceptr, size_t))                                        \
  X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr, const void *, size_t, CUstream))              \
  X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void *, CUdeviceptr, size_t, CUstream))                    \
  X(cuIpcGetMemHandle, "cuIpcGetMemHandle", (CUipcMemHandle *, CUdeviceptr))                               \
  X(cuIpcOpenMemHandle, "cuIpcOpenMemHandle_v2", (CUdeviceptr *, CUipcMemHandle, unsigned))                \
  X(cuIpcCloseMemHandle, "cuIpcCloseMemHandle", (CUdeviceptr))                                             \
  X(cuStreamCreate, "cuStreamCreate", (CUstream *, unsigned))                                              \
  X(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream))                                                     \
  X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream))                                                \
  X(cuEventCreate, "cuEventCreate", (CUevent *, unsigned))                                                 \
  X(cuEventDestroy, "cuEventDestroy_v2", (CUevent))                                                        \
  X(cuEventRecord, "cuEventRecord", (CUevent, CUstream))                                                   \
  X(cuEventQuery, "cuEventQuery", (CUevent))                                                               \
  X(cuEventSynchronize, "cuEventSynchronize", (CUevent))                                                   \
  X(cuEventElapsedTime, "cuEventElapsedTime", (float *, CUevent, CUevent))                                 \
  X(cuMemAddressReserve, "cuMemAddressReserve",                                                            \
    (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long))                                      \
  X(cuMemAddressFree, "cuMemAddressFree", (CUdeviceptr, size_t))                                           \
  X(cuMemCreate, "cuMemCreate",                                                                            \
    (CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long))             \
  X(cuMemRelease, "cuMemRelease", (CUmemGenericAllocationHandle))                                          \
  X(cuMemMap, "cuMemMap", (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long)) \
  X(cuMemUnmap, "cuMemUnmap", (CUdeviceptr, size_t))                                                       \
  X(cuMemSetAccess, "cuMemSetAccess", (CUdeviceptr, size_t, const CUmemAccessDesc *, size_t))              \
  X(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity",                                        \
    (size_t *, const CUmemAllocationProp *, int))                                                          \
  X(cuMemRetainAllocationHandle, "cuMemRetainAllocationHandle", (CUmemGenericAllocationHandle *, void *))  \
  X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle",                                          \
    (void *, CUmemGenericAllocationHandle, int, unsigned long long))                                       \
  X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle",                                      \
    (CUmemGenericAllocationHandle *, void *, int))                                                         \
  X(cuMemGetHandleForAddressRange, "cuMemGetHandleForAddressRange",                                        \
    (void *, CUdeviceptr, size_t, int, unsigned long long))                                                \
  X(cuStreamGetCtx, "cuStreamGetCtx", (CUstream, CUcontext *))                                             \
  X(cuStreamQuery, "cuStreamQuery", (CUstream))                                                            \
  X(cuStreamWaitValue32, "cuStreamWaitValue32_v2", (CUstream, CUdeviceptr, unsigned, unsigned))            \
  X(cuMemHostGetDevicePointer, "cuMemHostGetDevicePointer_v2", (CUdeviceptr *, void *, unsigned))          \
  X(cuMemsetD32Async, "cuMemsetD32Async", (CUdeviceptr, unsigned, size_t, CUstream))

struct Api {
#define MC_CUDA_FIELD(name, sym, params) CUresult(*name) params = nullptr;
  MC_CUDA_FUNCS(MC_CUDA_FIELD)
#undef MC_CUDA_FIELD
  int device_count = 0;
  int driver_version = 0;
};

// The driver, loaded and initialized once per process (thread-safe). nullptr when there is no
// libcuda.so.1, it lacks a function mc needs, cuInit fails or no GPU is visible; why() then says
// which. MC_CUDA_DISABLE=1 in the environment makes it nullptr too (tests of the no-GPU path).
const Api *api();
// True when libcuda.so.1 is already loaded in this process (by us or by a framework), without
// loading it: a process that never loaded it holds no device memory.
bool driver_in_process();
const std::string &why_unavailable();

// "cuMemcpyAsync: CUDA_ERROR_INVALID_VALUE (invalid argument)"-style text for a failed call.
std::string error_text(const char *what, CUresult r);
inline Status check(const char *what, CUresult r, mc_status_t code = MC_ERR_TRANSPORT) {
  return r == CUDA_SUCCESS ? Status::Ok() : Err(code, error_text(what, r));
}

// The primary context of device dev (retained once for the life of the process) made current
// on the calling thread. Every thread that calls the driver sets it first.
Status use_device(int dev);
CUcontext primary_context(int dev);  // nullptr if not retained yet

// Makes c current on the calling thread (keeping use_device's record of the current context
// right) and returns the context that was current, for restore_context. Never fails silently:
// *st says why when c could not be made current.
CUcontext swap_context(CUcontext c, Status *st);
void restore_context(CUcontext prev);

// What a pointer is, from the driver's pointer attributes.
struct PointerInfo {
  bool device = false;  // device memory (cudaMalloc, VMM), not host-accessible
  int ordinal = -1;     // its GPU
};
// Asks the driver about p. Host memory and unknown pointers: device = false.
PointerInfo pointer_info(const void *p);

// ------------------------------------------------------------------------------ dma-buf
// GPU memory for RDMA NICs: the driver exports a device range as a Linux dma-buf file
// descriptor (cuMemGetHandleForAddressRange, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD), which the NIC
// registers with ibv_reg_dmabuf_mr(pd, offset, length, iova, fd, access). The driver wants the
// range aligned to the host page size, so the exported range is the buffer's, aligned down at
// the start and up at the end, and the buffer lies at `offset` inside it.
struct DmabufRange {
  int fd = -1;          // the dma-buf; the caller owns it (dmabuf_forget, then close)
  uint64_t base = 0;    // device address of the exported range (host-page aligned)
  uint64_t length = 0;  // its length (a multiple of the host page)
  uint64_t offset = 0;  // where the asked-for pointer lies in it
};
// Whether GPU dev can export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, CUDA 11.7+ and a
// kernel and driver with dma-buf support); *why says what is missing when not.
bool dmabuf_supported(int dev, std::string *why);
// GPU dev's PCI address as sysfs names it ("0000:3b:00.0"); false without a driver or GPU dev.
bool pci_address(int dev, std::string *out);
// Exports [p, p+len) of GPU dev's memory. When the page-aligned span of the buffer is refused
// (it may reach past its allocation) the whole allocation, page-aligned, is tried. MC_ERR_
// UNSUPPORTED with the driver's reason when it cannot.
Status export_dmabuf(int dev, CUdeviceptr p, uint64_t len, DmabufRange *out);
// The device range behind a dma-buf that this process exported (matched by the file's inode,
// so a dup of the fd matches too); false for any other fd. For the simulated NIC, which cannot
// map GPU memory through the fd as a NIC's DMA engine does.
bool dmabuf_lookup(int fd, int *dev, uint64_t *base, uint64_t *length);
// Drops the record of an export; call it before closing the exporter's fd.
void dmabuf_forget(int fd);

// True once a "cuda:N" buffer was registered in this process: until then no host pointer needs
// a driver call to be told apart from device memory.
bool device_buffers_seen();
void note_device_buffer();

}  // namespace mc::cuda
