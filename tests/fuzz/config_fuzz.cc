// libFuzzer target: the daemon's configuration (wanopt/config/config.h), any text.
//
// Whatever the text: no crash, no exception out of ParseConfig (libFuzzer reports an
// escaped one as a crash), no undefined behaviour; it returns a config or an error that
// names the source.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "wanopt/config/config.h"

using namespace wanopt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto config = ParseConfig(text, "fuzz.toml", &error);
  if (!config) {
    // Not checked: that it is one line. toml++'s descriptions quote the offending
    // character as it is ("expected 'false', saw '<newline>'"), and wanopt's own
    // messages quote the value, which a TOML string may spell with \n.
    if (error.rfind("fuzz.toml:", 0) != 0) {
      std::fprintf(stderr, "bad error message: [%s]\n", error.c_str());
      std::abort();
    }
    return 0;
  }
  if (!error.empty()) std::abort();
  return 0;
}
