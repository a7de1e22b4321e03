// One connection to the status server (internal to wanopt/status): reads requests,
// answers them, and ends itself, never holding more than it must.
//
// - The request's header must arrive within `request_deadline` of the connection
//   (or of the previous answer, on a kept-alive connection): an idle connection is
//   closed then, not held.
// - The header is screened before anything else is read (method, token): a request
//   the screen answers is answered at once and the connection closed.
// - The request body is bounded (16 KiB), and so is the header.
//
// It runs on the status server's thread and owns itself (shared_from_this); the
// handlers must outlive every connection (the server's io_context destroys them).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace wanopt::status {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

struct HttpHandlers {
  // Looks at a request's header before its body is read: an answer (401, 405) is
  // sent and the connection closed; nullopt lets the request through to `handle`.
  std::function<std::optional<Response>(const Request& header_only, const boost::asio::ip::tcp::endpoint& from)>
      screen;
  std::function<Response(const Request&)> handle;
  // Called once when a connection ends (the server counts its open connections).
  std::function<void()> closed;
  std::chrono::milliseconds request_deadline{5000};
  std::chrono::milliseconds write_deadline{30000};
};

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(boost::asio::ip::tcp::socket socket, const HttpHandlers& handlers);
  ~HttpConnection();  // calls handlers.closed
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  void Start();

 private:
  void ReadHeader();
  void ReadBody();
  void Answer(Response response, bool keep_alive);

  boost::beast::tcp_stream stream_;
  boost::asio::ip::tcp::endpoint from_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  Response response_;
  const HttpHandlers& handlers_;
};

}  // namespace wanopt::status
