// dre_bench's baselines: zstd -3 and the socat chain (see dre_baselines.h).
#include "tests/bench/dre_baselines.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <zstd.h>

#include <algorithm>
#include <stdexcept>

#include "tests/bench/dre_util.h"

namespace wanopt::bench {
namespace {

size_t ZstdSize(std::span<const uint8_t> data, int level = 3) {
  static thread_local ZSTD_CCtx* cctx = ZSTD_createCCtx();
  static thread_local Bytes out;
  out.resize(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compressCCtx(cctx, out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  return n;
}

}  // namespace

ZstdResult Zstd(std::span<const uint8_t> data) {
  auto t0 = Clock::now();
  ZstdResult r{data.size(), ZstdSize(data), 0};
  r.seconds = Seconds(t0);
  return r;
}

ZstdResult ZstdLikeCodec(std::span<const uint8_t> data) {
  ZstdResult r;
  r.in = data.size();
  auto t0 = Clock::now();
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 20);
  constexpr size_t kBlock = 88 * 1024;
  Bytes out(ZSTD_compressBound(kBlock));
  for (size_t at = 0; at < data.size(); at += kBlock) {
    size_t n = std::min(kBlock, data.size() - at);
    ZSTD_inBuffer in{data.data() + at, n, 0};
    for (;;) {
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      size_t left = ZSTD_compressStream2(cctx, &o, &in, ZSTD_e_flush);
      if (ZSTD_isError(left)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(left));
      r.out += o.pos;
      if (left == 0 && in.pos == in.size) break;
    }
  }
  ZSTD_freeCCtx(cctx);
  r.seconds = Seconds(t0);
  return r;
}

ZstdResult ZstdEach(const std::vector<Bytes>& messages) {
  ZstdResult r;
  auto t0 = Clock::now();
  for (const auto& m : messages) {
    r.in += m.size();
    r.out += ZstdSize(m);
  }
  r.seconds = Seconds(t0);
  return r;
}

Json ZstdJson(const ZstdResult& z) {
  Json j;
  j.Int("in_bytes", z.in).Int("out_bytes", z.out).Dbl("reduction_percent", z.reduction(), 3).Dbl("compress_mbps_one_core", z.mbps(), 1);
  return j;
}

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool CanConnect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

pid_t StartSocat(const std::string& socat, uint16_t listen, uint16_t to) {
  std::string a = "TCP-LISTEN:" + std::to_string(listen) + ",bind=127.0.0.1,reuseaddr,fork";
  std::string b = "TCP:127.0.0.1:" + std::to_string(to);
  pid_t pid = fork();
  if (pid == 0) {
    ::close_range(3, ~0u, 0);
    execl(socat.c_str(), socat.c_str(), a.c_str(), b.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

}  // namespace wanopt::bench
