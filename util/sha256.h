// SHA-256 (OpenSSL), incremental, for verifying that relayed bytes arrive intact.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace wanopt {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  void Update(std::span<const uint8_t> bytes);
  // Lower-case hex of the digest. The object must not be updated afterwards.
  std::string HexDigest();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string Sha256Hex(std::span<const uint8_t> bytes);

}  // namespace wanopt
