// libFuzzer target: WCCPv2 messages and GRE redirect packets (wanopt/wccp). Whatever
// the bytes: no crash, no read past the end; a message that decodes encodes to one
// that decodes to the same message (and the same bytes again); MD5 verification of
// any bytes is safe; a GRE packet that parses points inside the input.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "wanopt/wccp/gre.h"
#include "wanopt/wccp/message.h"

using namespace wanopt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  if (auto message = wccp::Decode(input)) {
    auto wire = wccp::Encode(*message);
    if (!wire) abort();  // it came from at most 65535 bytes: it fits again
    auto again = wccp::Decode(*wire);
    if (!again || !(*again == *message)) abort();
    auto wire2 = wccp::Encode(*again);
    if (!wire2 || *wire2 != *wire) abort();
    if (message->security && message->security->option == wccp::kSecurityMd5) {
      if (!wccp::Sign(*wire, "secret") || !wccp::Verify(*wire, "secret") || wccp::Verify(*wire, "other")) abort();
    }
  }
  (void)wccp::Verify(input, "secret");
  if (auto gre = wccp::ParseGre(input)) {
    if (gre->inner.size() < 20 || gre->inner.data() < data || gre->inner.data() + gre->inner.size() > data + size)
      abort();
    auto built = wccp::BuildGre(gre->redirect, gre->inner);
    auto back = wccp::ParseGre(built);
    if (!back || back->redirect != gre->redirect || back->inner.size() != gre->inner.size()) abort();
  }
  return 0;
}
