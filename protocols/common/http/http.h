// HTTP/1.x message heads and body framing (RFC 9112) for modules that look inside
// HTTP: the rpch module (RPC over HTTP v2, MAPI over HTTP). Pure parsing: no sockets,
// no buffering of bodies. A module feeds what it holds of one direction and gets
// need-more, a parsed head, or an error; its answer to any error is to stop
// interpreting the connection and let the bytes flow on (or reset it).
//
// Strict on purpose, since a proxy that frames a message differently from the server
// it forwards to makes request smuggling possible: lines end in CRLF only (a bare LF
// or bare CR is an error: Windows' HTTP.sys, IIS, impacket and Samba all send CRLF,
// so tolerance would buy nothing but ambiguity), no obs-fold, no CR/LF/NUL inside a
// value, no whitespace before a field's colon, Transfer-Encoding and Content-Length
// together refused, Content-Length values that disagree refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace wanopt::protocols::http {

struct Limits {
  size_t max_head = 16 * 1024;  // bytes, the final CRLFCRLF included
  size_t max_fields = 100;
};

struct Field {
  std::string name;   // as sent
  std::string value;  // without leading or trailing whitespace
};

struct Head {
  bool request = true;
  std::string method;  // requests
  std::string target;  // requests: as sent ("/rpc/rpcproxy.dll?exch:6001")
  int version_minor = 1;  // HTTP/1.0 or HTTP/1.1
  int status = 0;         // responses
  std::string reason;     // responses
  std::vector<Field> fields;
  size_t length = 0;  // bytes of the head in the stream; the body starts there

  // The first field of that name (ASCII case-insensitive), or nullptr.
  const std::string* Find(std::string_view name) const;
  size_t Count(std::string_view name) const;
};

struct HeadParse {
  enum Kind : uint8_t { kNeedMore, kHead, kMalformed };
  Kind kind = kNeedMore;
  Head head;               // kHead
  std::string_view error;  // kMalformed: a static reason
};

// Looks at the front of `stream` for one request head (request == true) or response
// head. Bytes that prove the stream is not a valid head are reported at once (a control
// byte, a bare LF), not only when the head is complete.
HeadParse ParseHead(std::span<const uint8_t> stream, bool request, const Limits& limits = {});

// How the body after a head is delimited (RFC 9112 section 6.3).
struct Framing {
  enum Kind : uint8_t {
    kNone,        // no body (a request without either field; 1xx, 204, 304, a HEAD's answer)
    kLength,      // exactly `length` bytes
    kChunked,     // chunked coding: walk it with ChunkWalker
    kUntilClose,  // responses only: the body ends when the connection closes
    kMalformed,   // `error` says why
  };
  Kind kind = kNone;
  uint64_t length = 0;
  std::string_view error;
};
inline constexpr uint64_t kMaxContentLength = uint64_t{1} << 62;
// `request_method`: for a response, the method of the request it answers ("HEAD"
// has no body). Content-Length must be digits only, at most kMaxContentLength, and
// equal in every field and list element that gives it.
Framing BodyFraming(const Head& head, std::string_view request_method = {});

// Walks a chunked body as it streams by, telling which bytes are chunk data and
// which are framing (sizes, extensions, CRLFs, trailers). Keeps only its position in
// the coding, never the data. Bounded: a size line of at most 1 KiB, trailers of at
// most 16 KiB, chunk sizes below 2^62.
class ChunkWalker {
 public:
  struct Piece {
    bool data = false;  // chunk data, else framing
    size_t offset = 0;  // in the span given to Feed
    size_t length = 0;
  };
  struct Fed {
    size_t consumed = 0;  // bytes of the span that belong to the body
    bool done = false;    // the body ended (last chunk and trailers); bytes after `consumed` are the next message
    std::string_view error;  // non-empty: malformed; stop walking
  };
  // Appends to `pieces` (adjacent pieces of one kind are merged within a call), in
  // order, covering exactly [0, consumed). After done or an error, Feed consumes nothing.
  Fed Feed(std::span<const uint8_t> bytes, std::vector<Piece>& pieces);
  bool done() const { return state_ == kDone; }
  uint64_t data_bytes() const { return data_total_; }

 private:
  enum State : uint8_t {
    kSizeStart, kSize, kSizeSpace, kExtension, kSizeLf, kData, kDataCr, kDataLf,
    kTrailerStart, kTrailer, kTrailerLf, kFinalLf, kDone, kError,
  };
  State state_ = kSizeStart;
  uint64_t size_ = 0;       // of the chunk whose size is being read
  uint64_t remaining_ = 0;  // data bytes left in the current chunk
  size_t line_ = 0;         // bytes of the current size line
  size_t trailers_ = 0;     // bytes of trailer seen
  uint64_t data_total_ = 0;
};

// ---------------------------------------------------------------------------------
// What the rpch module recognises

// RPC over HTTP v2: RPC_IN_DATA (IN channel) or RPC_OUT_DATA (OUT channel) to
// "<path>?<server>:<port>" (MS-RPCH 2.1.2.1.1; the path is usually /rpc/rpcproxy.dll).
struct RpcOverHttpRequest {
  bool in_channel = true;
  std::string path;    // the target before '?'
  std::string server;  // empty and port 0 if the query is not "server:port"
  uint16_t port = 0;
};
std::optional<RpcOverHttpRequest> AsRpcOverHttp(const Head& head);

// MAPI over HTTP (MS-OXCMAPIHTTP): POST to /mapi/emsmdb/ or /mapi/nspi/ (any case,
// with or without the final slash, any query) with an X-RequestType field.
struct MapiOverHttpRequest {
  bool emsmdb = true;  // else NSPI
  std::string request_type;  // Connect, Execute, Disconnect, NotificationWait, Bind, ...
  std::string request_id;    // X-RequestId, may be empty
  std::string client_info;   // X-ClientInfo, may be empty
};
std::optional<MapiOverHttpRequest> AsMapiOverHttp(const Head& head);

bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace wanopt::protocols::http
