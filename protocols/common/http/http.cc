#include "protocols/common/http/http.h"

#include <algorithm>

namespace wanopt::protocols::http {

namespace {

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsTchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}
bool IsToken(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), IsTchar); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
// A byte no head may hold anywhere: controls other than HTAB, CR and LF, and DEL.
bool IsForbiddenControl(uint8_t b) { return (b < 0x20 && b != '\t' && b != '\r' && b != '\n') || b == 0x7f; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

HeadParse Bad(std::string_view reason) {
  HeadParse p;
  p.kind = HeadParse::kMalformed;
  p.error = reason;
  return p;
}

// "HTTP/1.0" or "HTTP/1.1": the minor version, or -1.
int ParseVersion(std::string_view s) {
  if (s == "HTTP/1.1") return 1;
  if (s == "HTTP/1.0") return 0;
  return -1;
}

std::string_view ParseStartLine(std::string_view line, bool request, Head& head) {
  head.request = request;
  if (request) {
    size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return "request line without a target";
    size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return "request line without a version";
    std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (!IsToken(method)) return "request method is not a token";
    if (target.empty() || !std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
      return "request target empty or with bytes a target cannot hold";
    int minor = ParseVersion(line.substr(sp2 + 1));
    if (minor < 0) return "not HTTP/1.0 or HTTP/1.1";
    head.method = method;
    head.target = target;
    head.version_minor = minor;
    return {};
  }
  int minor = ParseVersion(line.substr(0, std::min<size_t>(8, line.size())));
  if (minor < 0) return "not HTTP/1.0 or HTTP/1.1";
  if (line.size() < 12 || line[8] != ' ' || !IsDigit(line[9]) || !IsDigit(line[10]) || !IsDigit(line[11]))
    return "status line without a three-digit status";
  if (line.size() > 12 && line[12] != ' ') return "status code longer than three digits";
  head.version_minor = minor;
  head.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (head.status < 100) return "status code below 100";
  if (line.size() > 13) head.reason = line.substr(13);
  return {};
}

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return Lower(x) == Lower(y); });
}

const std::string* Head::Find(std::string_view name) const {
  for (const Field& f : fields)
    if (EqualsIgnoreCase(f.name, name)) return &f.value;
  return nullptr;
}

size_t Head::Count(std::string_view name) const {
  return static_cast<size_t>(
      std::count_if(fields.begin(), fields.end(), [&](const Field& f) { return EqualsIgnoreCase(f.name, name); }));
}

HeadParse ParseHead(std::span<const uint8_t> stream, bool request, const Limits& limits) {
  // Find the end of the head, checking every byte on the way so that garbage is
  // refused as soon as it arrives.
  const size_t scan = std::min(stream.size(), limits.max_head);
  size_t end = 0;
  for (size_t i = 0; i < scan; ++i) {
    uint8_t b = stream[i];
    if (IsForbiddenControl(b)) return Bad("control byte in the head");
    if (b == '\n' && (i == 0 || stream[i - 1] != '\r')) return Bad("bare LF in the head");
    if (b == '\r' && i + 1 < stream.size() && stream[i + 1] != '\n') return Bad("bare CR in the head");
    if (b == '\n' && i >= 3 && stream[i - 2] == '\n') {
      end = i + 1;
      break;
    }
  }
  if (end == 0) {
    if (stream.size() >= limits.max_head) return Bad("head larger than the limit");
    return {};
  }
  std::string_view text(reinterpret_cast<const char*>(stream.data()), end - 2);  // without the final CRLF
  HeadParse out;
  Head& head = out.head;
  head.length = end;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    size_t eol = text.find("\r\n", pos);  // every line ends in CRLF: the scan proved it
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 2;
    if (first) {
      if (line.empty()) return Bad("empty line before the start line");
      if (auto error = ParseStartLine(line, request, head); !error.empty()) return Bad(error);
      first = false;
      continue;
    }
    if (line.front() == ' ' || line.front() == '\t') return Bad("obs-fold (a field line continued) refused");
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Bad("field line without a colon");
    std::string_view name = line.substr(0, colon);
    if (!IsToken(name)) return Bad("field name is not a token (or whitespace before the colon)");
    if (head.fields.size() >= limits.max_fields) return Bad("more header fields than the limit");
    head.fields.push_back({std::string(name), std::string(Trim(line.substr(colon + 1)))});
  }
  if (first) return Bad("empty head");
  out.kind = HeadParse::kHead;
  return out;
}

namespace {

// Every Content-Length field and list element: digits, equal. nullopt + reason if not.
Framing ContentLength(const Head& head) {
  std::optional<uint64_t> length;
  for (const Field& f : head.fields) {
    if (!EqualsIgnoreCase(f.name, "Content-Length")) continue;
    std::string_view rest = f.value;
    for (;;) {
      size_t comma = rest.find(',');
      std::string_view item = Trim(rest.substr(0, comma));
      if (item.empty() || item.size() > 19 || !std::all_of(item.begin(), item.end(), IsDigit))
        return {Framing::kMalformed, 0, "Content-Length is not a number"};
      uint64_t v = 0;
      for (char c : item) v = v * 10 + static_cast<uint64_t>(c - '0');
      if (v > kMaxContentLength) return {Framing::kMalformed, 0, "Content-Length above the limit"};
      if (length && *length != v) return {Framing::kMalformed, 0, "Content-Length values disagree"};
      length = v;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return {Framing::kLength, length.value_or(0), {}};
}

// The transfer codings, in order, from every Transfer-Encoding field.
std::vector<std::string_view> Codings(const Head& head) {
  std::vector<std::string_view> out;
  for (const Field& f : head.fields) {
    if (!EqualsIgnoreCase(f.name, "Transfer-Encoding")) continue;
    std::string_view rest = f.value;
    for (;;) {
      size_t comma = rest.find(',');
      std::string_view item = Trim(rest.substr(0, comma));
      item = Trim(item.substr(0, item.find(';')));  // parameters do not matter here
      if (!item.empty()) out.push_back(item);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return out;
}

}  // namespace

Framing BodyFraming(const Head& head, std::string_view request_method) {
  if (!head.request && ((head.status >= 100 && head.status < 200) || head.status == 204 || head.status == 304 ||
                        request_method == "HEAD"))
    return {Framing::kNone, 0, {}};
  bool has_te = head.Find("Transfer-Encoding") != nullptr;
  bool has_cl = head.Find("Content-Length") != nullptr;
  if (has_te && has_cl) return {Framing::kMalformed, 0, "both Transfer-Encoding and Content-Length"};
  if (has_te) {
    if (head.version_minor == 0) return {Framing::kMalformed, 0, "Transfer-Encoding in an HTTP/1.0 message"};
    auto codings = Codings(head);
    if (codings.empty()) return {Framing::kMalformed, 0, "empty Transfer-Encoding"};
    auto is_chunked = [](std::string_view c) { return EqualsIgnoreCase(c, "chunked"); };
    if (std::count_if(codings.begin(), codings.end(), is_chunked) > 1)
      return {Framing::kMalformed, 0, "chunked applied more than once"};
    if (EqualsIgnoreCase(codings.back(), "chunked")) return {Framing::kChunked, 0, {}};
    if (head.request) return {Framing::kMalformed, 0, "request Transfer-Encoding not ending in chunked"};
    return {Framing::kUntilClose, 0, {}};
  }
  if (has_cl) return ContentLength(head);
  return {head.request ? Framing::kNone : Framing::kUntilClose, 0, {}};
}

// ---------------------------------------------------------------------------------

namespace {
constexpr size_t kMaxSizeLine = 1024;
constexpr size_t kMaxTrailers = 16 * 1024;
constexpr uint64_t kMaxChunk = uint64_t{1} << 62;

int HexValue(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

ChunkWalker::Fed ChunkWalker::Feed(std::span<const uint8_t> bytes, std::vector<Piece>& pieces) {
  Fed fed;
  const size_t first_piece = pieces.size();
  auto add = [&](bool data, size_t offset, size_t length) {
    if (pieces.size() > first_piece && pieces.back().data == data &&
        pieces.back().offset + pieces.back().length == offset) {
      pieces.back().length += length;
    } else {
      pieces.push_back({data, offset, length});
    }
  };
  auto fail = [&](size_t at, std::string_view reason) {
    state_ = kError;
    fed.consumed = at;
    fed.error = reason;
    return fed;
  };
  if (state_ == kError) return fail(0, "chunked body already malformed");
  size_t i = 0;
  while (i < bytes.size() && state_ != kDone) {
    if (state_ == kData) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, bytes.size() - i));
      add(true, i, n);
      remaining_ -= n;
      data_total_ += n;
      i += n;
      if (remaining_ == 0) state_ = kDataCr;
      continue;
    }
    const uint8_t b = bytes[i];
    if (state_ <= kSizeLf && ++line_ > kMaxSizeLine) return fail(i, "chunk size line longer than the limit");
    if (state_ >= kTrailerStart && state_ <= kFinalLf && ++trailers_ > kMaxTrailers)
      return fail(i, "chunked trailers longer than the limit");
    switch (state_) {
      case kSizeStart:
      case kSize: {
        int d = HexValue(b);
        if (d >= 0) {
          if (state_ == kSizeStart) size_ = 0;
          if (size_ >= kMaxChunk >> 4) return fail(i, "chunk size above the limit");
          size_ = size_ * 16 + static_cast<uint64_t>(d);
          state_ = kSize;
        } else if (state_ == kSizeStart) {
          return fail(i, "chunk size is not hexadecimal");
        } else if (b == ';') {
          state_ = kExtension;
        } else if (b == ' ' || b == '\t') {
          state_ = kSizeSpace;
        } else if (b == '\r') {
          state_ = kSizeLf;
        } else {
          return fail(i, "chunk size followed by something else than an extension or CRLF");
        }
        break;
      }
      case kSizeSpace:
        if (b == ';') state_ = kExtension;
        else if (b != ' ' && b != '\t') return fail(i, "whitespace after a chunk size without an extension");
        break;
      case kExtension:
        if (b == '\r') state_ = kSizeLf;
        else if (IsForbiddenControl(b) || b == '\n') return fail(i, "control byte in a chunk extension");
        break;
      case kSizeLf:
        if (b != '\n') return fail(i, "bare CR in a chunk size line");
        line_ = 0;
        if (size_ == 0) {
          state_ = kTrailerStart;
          trailers_ = 0;
        } else {
          remaining_ = size_;
          state_ = kData;
        }
        break;
      case kDataCr:
        if (b != '\r') return fail(i, "chunk data longer than its size");
        state_ = kDataLf;
        break;
      case kDataLf:
        if (b != '\n') return fail(i, "chunk data not followed by CRLF");
        state_ = kSizeStart;
        break;
      case kTrailerStart:
        if (b == '\r') state_ = kFinalLf;
        else if (b == ' ' || b == '\t') return fail(i, "obs-fold in a trailer");
        else if (IsForbiddenControl(b) || b == '\n') return fail(i, "control byte in a trailer");
        else state_ = kTrailer;
        break;
      case kTrailer:
        if (b == '\r') state_ = kTrailerLf;
        else if (IsForbiddenControl(b) || b == '\n') return fail(i, "control byte in a trailer");
        break;
      case kTrailerLf:
        if (b != '\n') return fail(i, "bare CR in a trailer");
        state_ = kTrailerStart;
        break;
      case kFinalLf:
        if (b != '\n') return fail(i, "bare CR at the end of a chunked body");
        state_ = kDone;
        break;
      default:
        break;
    }
    add(false, i, 1);
    ++i;
  }
  fed.consumed = i;
  fed.done = state_ == kDone;
  return fed;
}

// ---------------------------------------------------------------------------------

std::optional<RpcOverHttpRequest> AsRpcOverHttp(const Head& head) {
  if (!head.request || (head.method != "RPC_IN_DATA" && head.method != "RPC_OUT_DATA")) return std::nullopt;
  RpcOverHttpRequest r;
  r.in_channel = head.method == "RPC_IN_DATA";
  std::string_view target = head.target;
  size_t q = target.find('?');
  r.path = target.substr(0, q);
  if (q == std::string_view::npos) return r;
  std::string_view query = target.substr(q + 1);
  size_t colon = query.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return r;
  std::string_view port = query.substr(colon + 1);
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), IsDigit)) return r;
  unsigned value = 0;
  for (char c : port) value = value * 10 + static_cast<unsigned>(c - '0');
  if (value == 0 || value > 65535) return r;
  r.server = query.substr(0, colon);
  r.port = static_cast<uint16_t>(value);
  return r;
}

std::optional<MapiOverHttpRequest> AsMapiOverHttp(const Head& head) {
  if (!head.request || head.method != "POST") return std::nullopt;
  std::string_view path = std::string_view(head.target).substr(0, head.target.find('?'));
  if (!path.empty() && path.back() == '/') path.remove_suffix(1);
  MapiOverHttpRequest m;
  if (EqualsIgnoreCase(path, "/mapi/emsmdb")) m.emsmdb = true;
  else if (EqualsIgnoreCase(path, "/mapi/nspi")) m.emsmdb = false;
  else return std::nullopt;
  const std::string* type = head.Find("X-RequestType");
  if (!type || type->empty()) return std::nullopt;
  m.request_type = *type;
  if (const std::string* id = head.Find("X-RequestId")) m.request_id = *id;
  if (const std::string* info = head.Find("X-ClientInfo")) m.client_info = *info;
  return m;
}

}  // namespace wanopt::protocols::http
