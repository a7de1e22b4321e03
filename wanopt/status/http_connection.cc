#include "wanopt/status/http_connection.h"

namespace wanopt::status {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;
using boost::system::error_code;

HttpConnection::HttpConnection(tcp::socket socket, const HttpHandlers& handlers)
    : stream_(std::move(socket)), handlers_(handlers) {
  error_code ec;
  from_ = stream_.socket().remote_endpoint(ec);
}

HttpConnection::~HttpConnection() {
  if (handlers_.closed) handlers_.closed();
}

void HttpConnection::Start() { ReadHeader(); }

void HttpConnection::ReadHeader() {
  parser_.emplace();
  parser_->header_limit(16 * 1024);
  parser_->body_limit(16 * 1024);
  // Idle or slow connections are closed when this passes: nobody holds one for long.
  stream_.expires_after(handlers_.request_deadline);
  http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
    if (ec) return;  // timeout, reset, malformed or oversized header: just close
    if (auto answer = self->handlers_.screen(self->parser_->get(), self->from_)) {
      self->Answer(std::move(*answer), /*keep_alive=*/false);
      return;
    }
    self->ReadBody();
  });
}

void HttpConnection::ReadBody() {
  if (parser_->is_done()) {
    Request request = parser_->release();
    bool keep_alive = request.keep_alive();
    Answer(handlers_.handle(request), keep_alive);
    return;
  }
  http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
    if (ec) return;
    self->ReadBody();
  });
}

void HttpConnection::Answer(Response response, bool keep_alive) {
  response_ = std::move(response);
  response_.keep_alive(keep_alive);
  response_.prepare_payload();
  stream_.expires_after(handlers_.write_deadline);
  http::async_write(stream_, response_, [self = shared_from_this()](error_code ec, size_t) {
    if (ec || !self->response_.keep_alive()) {
      error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    self->ReadHeader();
  });
}

}  // namespace wanopt::status
