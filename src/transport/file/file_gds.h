// cuFile (GPUDirect Storage) for the file transport, loaded at run time: libcufile is looked
// for with dlopen (never linked), its driver opened once per process at the first request that
// moves GPU memory, one cuFile handle per descriptor of an open file (its O_DIRECT one and its
// buffered one, each registered at its first use), and reads and writes between GPU memory and
// the file. Without the nvidia-fs kernel module cuFile runs in its compatibility mode (POSIX
// I/O through its own pinned buffers) where /etc/cufile.json allows it. The rings decide per
// request; any cuFile failure sends that request through the pinned staging pool instead.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace mc::file {

struct CuFileApi;  // the library's entry points (file_gds.cpp)

// The library, loaded once per process (thread-safe); nullptr with *why when it is absent or
// lacks an entry point mc uses.
const CuFileApi *cufile_load(std::string *why);

// cuFileDriverOpen for this process: true once it succeeded (then at once); false with *why,
// tried again by the next caller (another engine).
bool cufile_driver_open(const CuFileApi *a, std::string *why);

// Moves n bytes between GPU memory dev and the file behind handle h at offset off (READ when
// read): the bytes moved (cuFile may move fewer), or -1 with *why (the errno or cuFile's error).
// Blocks for the I/O.
int64_t cufile_io(const CuFileApi *a, void *h, bool read, void *dev, uint64_t n, uint64_t off,
                  std::string *why);

// The cuFile handles of one open file: [0] its buffered descriptor, [1] its O_DIRECT one.
// Registered at first use, once (a refusal is kept, with its reason); deregistered by close(),
// which the file calls before closing its descriptors.
class GdsFile {
 public:
  ~GdsFile() { close(); }
  // The handle of fd, registering it the first time; nullptr with *why when cuFile refused it.
  void *handle(const CuFileApi *a, int fd, bool direct, std::string *why);
  void close();

 private:
  std::mutex mu_;  // guards everything below
  const CuFileApi *a_ = nullptr;
  void *h_[2] = {nullptr, nullptr};
  bool tried_[2] = {false, false};
  std::string why_[2];
};

// file_gds: "auto" uses cuFile where found, "off" never, "on" requires it (engine creation
// fails without it).
enum class GdsMode { kAuto, kOff, kOn };
bool parse_gds_mode(const char *v, GdsMode *out);

// One transport instance's view of cuFile: its mode, whether requests use it, and counters.
class GdsEnv {
 public:
  using Log = std::function<void(int32_t level, const std::string &)>;
  GdsMode mode = GdsMode::kAuto;
  // Looks for the library (start of the rings, or create() for "on"); "on" also opens the
  // driver here: false with *why when cuFile cannot be used.
  bool setup(const Log &log, std::string *why);
  // True when requests may go through cuFile: the first call opens the driver (a failure
  // disables cuFile for this instance, logged with the reason). Thread-safe.
  bool usable(const Log &log);
  const CuFileApi *api() const { return api_; }
  // A request that cuFile failed, going back to the staging path: counted, logged once.
  void fallback(const Log &log, const std::string &what);
  // "absent", "found" (not used yet), "found, disabled (why)" or "in use".
  std::string state() const;
  std::string last_error() const;
  std::atomic<uint64_t> ops{0}, direct_ops{0}, bytes_read{0}, bytes_written{0}, fallbacks{0};

 private:
  enum : int { kAbsent, kFound, kInUse, kDisabled };
  void disable(const std::string &why);
  const CuFileApi *api_ = nullptr;  // set by setup, before any ring runs
  std::atomic<int> state_{kAbsent};
  mutable std::mutex mu_;  // guards why_ and last_
  std::string why_;        // why disabled
  std::string last_;       // the last request cuFile failed
  std::atomic<bool> logged_{false};
};

}  // namespace mc::file
