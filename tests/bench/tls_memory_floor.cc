// What OpenSSL itself keeps for each idle TLS inner channel: the floor under the
// memory per idle TLS connection that intercept_scale_bench.py measures.
//
// Usage: tls_memory_floor PKI_DIR [PAIRS]
//   PKI_DIR: what tests/lab/make-pki makes (ca.pem, branch.pem/key, dc.pem/key).
//
// The branch's and the datacenter's SecureContext are created as the daemons create
// them (mutual certificates, TLS 1.3, SSL_MODE_RELEASE_BUFFERS, one ticket per full
// handshake, the accepting side's session cache). Then PAIRS channels (default 500)
// are opened over socketpairs standing in for TCP connections, as the pump opens
// them: handshake, one byte each way (which leaves no record buffer behind), and
// held. What each side's SSL objects take is what glibc reports freed when they are
// freed (mallinfo2), so the sessions the accepting side caches (shared, bounded) are
// not counted. Twice: every channel a full handshake, then every one resuming the
// first one's ticket (what almost all of a box's channels are). Prints one JSON
// object.
#include <fcntl.h>
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "wanopt/channel/secure_channel.h"

namespace {

using wanopt::channel::PeeringSecurity;
using wanopt::channel::SecureContext;

size_t MallocBytes() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

std::unique_ptr<SecureContext> Context(const std::string& pki, const std::string& box) {
  PeeringSecurity security;
  security.mode = PeeringSecurity::Mode::kCertificate;
  security.ca_file = pki + "/ca.pem";
  security.cert_file = pki + "/" + box + ".pem";
  security.key_file = pki + "/" + box + ".key";
  std::string error;
  auto context = SecureContext::Create(security, &error);
  if (!context) {
    std::fprintf(stderr, "tls_memory_floor: %s\n", error.c_str());
    std::exit(1);
  }
  return context;
}

struct Channel {
  SSL* opener = nullptr;    // the branch's end
  SSL* acceptor = nullptr;  // the datacenter's
  int fds[2] = {-1, -1};
};

// Drives both ends until both have finished the handshake and moved a byte each way.
bool Open(Channel& c, const SecureContext& branch, const SecureContext& dc, SSL_SESSION* resume) {
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c.fds) != 0) return false;
  c.opener = SSL_new(branch.native_handle());
  c.acceptor = SSL_new(dc.native_handle());
  SSL_set_fd(c.opener, c.fds[0]);
  SSL_set_fd(c.acceptor, c.fds[1]);
  SSL_set_connect_state(c.opener);
  SSL_set_accept_state(c.acceptor);
  if (resume) SSL_set_session(c.opener, resume);
  for (int turn = 0; turn < 50 && !(SSL_is_init_finished(c.opener) && SSL_is_init_finished(c.acceptor)); ++turn) {
    SSL_do_handshake(c.opener);
    SSL_do_handshake(c.acceptor);
  }
  char byte;
  bool moved = SSL_write(c.acceptor, "y", 1) == 1 && SSL_read(c.opener, &byte, 1) == 1 &&  // the ticket comes first
               SSL_write(c.opener, "x", 1) == 1 && SSL_read(c.acceptor, &byte, 1) == 1;
  return moved && (resume == nullptr || SSL_session_reused(c.opener) == 1);
}

struct Result {
  double opener_bytes, acceptor_bytes;
};

Result Measure(int pairs, const SecureContext& branch, const SecureContext& dc, SSL_SESSION* resume) {
  std::vector<Channel> channels(pairs);
  for (auto& c : channels) {
    if (!Open(c, branch, dc, resume)) {
      std::fprintf(stderr, "tls_memory_floor: a channel did not open%s\n", resume ? " resumed" : "");
      std::exit(1);
    }
  }
  size_t before = MallocBytes();
  for (auto& c : channels) SSL_free(c.opener);
  size_t openers_freed = MallocBytes();
  for (auto& c : channels) SSL_free(c.acceptor);
  size_t acceptors_freed = MallocBytes();
  for (auto& c : channels) ::close(c.fds[0]), ::close(c.fds[1]);
  return {static_cast<double>(before - openers_freed) / pairs,
          static_cast<double>(openers_freed - acceptors_freed) / pairs};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: tls_memory_floor PKI_DIR [PAIRS]\n");
    return 2;
  }
  const int pairs = argc == 3 ? std::atoi(argv[2]) : 500;
  if (pairs <= 0) {
    std::fprintf(stderr, "tls_memory_floor: PAIRS must be a positive number\n");
    return 2;
  }
  auto branch = Context(argv[1], "branch");
  auto dc = Context(argv[1], "dc");
  // A ticket to resume: the first full handshake's.
  Channel first;
  if (!Open(first, *branch, *dc, nullptr)) return 1;
  SSL_SESSION* ticket = SSL_get1_session(first.opener);
  Result full = Measure(pairs, *branch, *dc, nullptr);
  Result resumed = Measure(pairs, *branch, *dc, ticket);
  std::printf(
      "{\"openssl\": \"%s\", \"pairs\": %d,\n"
      " \"full_handshake\": {\"branch_bytes_per_channel\": %.0f, \"dc_bytes_per_channel\": %.0f},\n"
      " \"resumed\": {\"branch_bytes_per_channel\": %.0f, \"dc_bytes_per_channel\": %.0f}}\n",
      OpenSSL_version(OPENSSL_VERSION), pairs, full.opener_bytes, full.acceptor_bytes, resumed.opener_bytes,
      resumed.acceptor_bytes);
  SSL_SESSION_free(ticket);
  SSL_free(first.opener);
  SSL_free(first.acceptor);
  return 0;
}
