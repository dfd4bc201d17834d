// GET /metrics over libmicrohttpd (Debian's libmicrohttpd-dev): its internal polling thread with
// epoll serves every connection, so the engine adds one thread for metrics, not one per scrape.
// We bind the socket ourselves (the same HOST:PORT parsing and port ranges as `listen`) and hand
// it to the library.
#include "metrics/http_server.h"

#include <cstring>

#include "util/log.h"
#include "util/net.h"

#if __has_include(<microhttpd.h>)
#define MC_HAVE_MHD 1
#include <microhttpd.h>
#endif

namespace mc::metrics {

#ifdef MC_HAVE_MHD

struct HttpServer::Impl {
  Page page;
  MHD_Daemon *daemon = nullptr;
  std::atomic<uint64_t> scrapes{0}, not_found{0}, bad_method{0};
};

namespace {

#if MHD_VERSION >= 0x00097002
using Result = enum MHD_Result;
#else
using Result = int;
#endif

Result answer(MHD_Connection *c, unsigned code, const std::string &body, const char *type, bool head,
              const char *allow = nullptr) {
  // HEAD gets the headers of GET and no body.
  MHD_Response *r = MHD_create_response_from_buffer(head ? 0 : body.size(), const_cast<char *>(body.data()),
                                                    MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", type);
  if (allow) MHD_add_response_header(r, "Allow", allow);
  Result ret = MHD_queue_response(c, code, r);
  MHD_destroy_response(r);
  return ret;
}

Result on_request(void *cls, MHD_Connection *c, const char *url, const char *method, const char *,
                  const char *, size_t *, void **) {
  auto *im = static_cast<HttpServer::Impl *>(cls);
  bool get = std::strcmp(method, "GET") == 0, head = std::strcmp(method, "HEAD") == 0;
  if (!get && !head) {
    // Answered at once, body unread: the library closes the connection after the answer.
    im->bad_method.fetch_add(1, std::memory_order_relaxed);
    return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD are served\n", "text/plain", false,
                  "GET, HEAD");
  }
  if (std::strcmp(url, "/metrics") != 0) {
    im->not_found.fetch_add(1, std::memory_order_relaxed);
    return answer(c, MHD_HTTP_NOT_FOUND, "not found: mc serves /metrics\n", "text/plain", head);
  }
  std::string text;
  try {
    text = im->page({im->scrapes.load(), im->not_found.load(), im->bad_method.load()});
  } catch (const std::exception &e) {
    return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, std::string("metrics: ") + e.what() + "\n", "text/plain",
                  head);
  }
  im->scrapes.fetch_add(1, std::memory_order_relaxed);
  return answer(c, MHD_HTTP_OK, text, "text/plain; version=0.0.4; charset=utf-8", head);
}

}  // namespace

Status HttpServer::start(const std::string &listen, Page page, std::unique_ptr<HttpServer> *out) {
  HostPort hp, bound;
  Status st = parse_host_port(listen, &hp);
  if (!st.ok()) return Err(MC_ERR_INVALID_ARG, "metrics_listen=" + listen + ": " + st.message());
  Fd fd;
  st = tcp_listen(hp, &fd, &bound);
  if (!st.ok()) return Err(st.code(), "metrics_listen=" + listen + ": " + st.message());
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->im_ = std::make_unique<Impl>();
  s->im_->page = std::move(page);
  s->bound_ = bound.str();
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
  int lfd = fd.get();
  s->im_->daemon =
      MHD_start_daemon(flags, 0, nullptr, nullptr, &on_request, s->im_.get(), MHD_OPTION_LISTEN_SOCKET, lfd,
                       MHD_OPTION_CONNECTION_LIMIT, static_cast<unsigned>(kMaxConnections),
                       MHD_OPTION_CONNECTION_MEMORY_LIMIT, static_cast<size_t>(kMaxRequestBytes),
                       MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(kIdleSeconds), MHD_OPTION_END);
  if (!s->im_->daemon)
    return Err(MC_ERR_INTERNAL, "metrics_listen=" + listen + ": libmicrohttpd did not start");
  fd.release();  // the daemon owns and closes it
  *out = std::move(s);
  return Status::Ok();
}

HttpServer::~HttpServer() {
  if (im_ && im_->daemon) MHD_stop_daemon(im_->daemon);
}

HttpServer::Counters HttpServer::counters() const {
  return {im_->scrapes.load(), im_->not_found.load(), im_->bad_method.load()};
}

#else  // no libmicrohttpd at build time

struct HttpServer::Impl {};

Status HttpServer::start(const std::string &listen, Page, std::unique_ptr<HttpServer> *) {
  return Err(MC_ERR_UNSUPPORTED, "metrics_listen=" + listen + ": this build of mc has no libmicrohttpd");
}
HttpServer::~HttpServer() = default;
HttpServer::Counters HttpServer::counters() const { return {}; }

#endif

}  // namespace mc::metrics
