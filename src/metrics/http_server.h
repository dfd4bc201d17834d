// The engine's metrics endpoint: GET /metrics on its own port (config key metrics_listen),
// served by libmicrohttpd from one internal epoll thread. A scrape adds no thread and keeps no
// descriptor after its connection closes; requests are bounded (a header block over
// kMaxRequestBytes is refused by the library, at most kMaxConnections at once, idle connections
// closed after kIdleSeconds). The page comes from a callback that only reads counters.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "util/status.h"

namespace mc::metrics {

class HttpServer {
 public:
  static constexpr size_t kMaxRequestBytes = 16 * 1024;
  static constexpr unsigned kMaxConnections = 16;
  static constexpr unsigned kIdleSeconds = 10;

  struct Counters {
    uint64_t scrapes = 0;     // 200 answers to GET /metrics
    uint64_t not_found = 0;   // 404: another path
    uint64_t bad_method = 0;  // 405: a method other than GET or HEAD
  };
  // Returns the exposition text, given the server's counters so far (the page reads them from
  // here, never through the server's owner, which may be setting up or tearing down the
  // server); called on the server's thread, one scrape at a time.
  using Page = std::function<std::string(const Counters &)>;

  // Binds listen (HOST:PORT as the `listen` key takes it; port 0 or a range picks a free one)
  // and starts the thread. MC_ERR_UNSUPPORTED when the library was built without
  // libmicrohttpd; bind failures as tcp_listen reports them.
  static Status start(const std::string &listen, Page page, std::unique_ptr<HttpServer> *out);
  ~HttpServer();  // stops the thread and closes every connection
  HttpServer(const HttpServer &) = delete;
  HttpServer &operator=(const HttpServer &) = delete;

  const std::string &bound() const { return bound_; }  // "127.0.0.1:NNNN", "[::1]:NNNN"
  Counters counters() const;

  struct Impl;

 private:
  HttpServer() = default;
  std::unique_ptr<Impl> im_;
  std::string bound_;
};

}  // namespace mc::metrics
