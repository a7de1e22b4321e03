// Percent-encoding for a URL's query values: what the status page's links and the
// `show` CLI's requests put after '='.
#pragma once

#include <cctype>
#include <cstdio>
#include <string>
#include <string_view>

namespace wanopt {

// Letters, digits, '-', '_' and '.' as they are; every other byte as %XX.
inline std::string UrlEncode(std::string_view text) {
  std::string out;
  char hex[4];
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

}  // namespace wanopt
