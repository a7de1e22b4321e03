// `wanopt show connections|peers|summary|datastore`: the status API in a terminal.
#pragma once

#include <string_view>
#include <vector>

namespace wanopt::cli {

extern const char kShowHelp[];
// Returns the process exit code.
int Show(const std::vector<std::string_view>& args);

}  // namespace wanopt::cli
