// /api/modules and `wanopt show modules` (wanopt/status/render_modules.cc): the
// modules' gauges and tables as JSON and as a text table.
#include <doctest/doctest.h>

#include "wanopt/status/render.h"

using namespace wanopt;
using protocols::ModuleTable;

namespace {

status::ModuleState Mapi() {
  ModuleTable t{"port_bindings",
                {{"server"}, {"proxy_port", true}, {"real_port", true}, {"interface"}, {"expires_in_s", true}},
                {{"198.18.2.10", "7830", "49154", "SAMR", "7199"}, {"2001:2:0:2::10", "7830", "49154", "SAMR", "12"}}};
  return {"branch", "mapi", {}, {t}};
}

}  // namespace

TEST_CASE("status modules: JSON has each box's module, its gauges, and its tables' rows as objects") {
  status::ModuleState smb{"branch", "smb2", {{"kept_bytes", 4096}, {"reads_ahead", 2}}, {}};
  std::string json = status::ModulesJson({Mapi(), smb});
  CHECK(json ==
        "{\"modules\":["
        "{\"box\":\"branch\",\"module\":\"mapi\",\"gauges\":{},\"tables\":{\"port_bindings\":["
        "{\"server\":\"198.18.2.10\",\"proxy_port\":7830,\"real_port\":49154,\"interface\":\"SAMR\",\"expires_in_s\":7199},"
        "{\"server\":\"2001:2:0:2::10\",\"proxy_port\":7830,\"real_port\":49154,\"interface\":\"SAMR\",\"expires_in_s\":12}"
        "]}},"
        "{\"box\":\"branch\",\"module\":\"smb2\",\"gauges\":{\"kept_bytes\":4096,\"reads_ahead\":2},\"tables\":{}}"
        "]}");
  // A numeric column's cell that is not an integer stays text: the JSON stays valid.
  status::ModuleState odd = Mapi();
  // ... nor a lone minus sign, nor a number past int64.
  odd.tables[0].rows[0] = {"198.18.2.10", "78\"30", "-", "SAMR", "99999999999999999999"};
  std::string odd_json = status::ModulesJson({odd});
  CHECK(odd_json.find("\"proxy_port\":\"78\\\"30\"") != std::string::npos);
  CHECK(odd_json.find("\"real_port\":\"-\"") != std::string::npos);
  CHECK(odd_json.find("\"expires_in_s\":\"99999999999999999999\"") != std::string::npos);
  CHECK(status::ModulesJson({}) == "{\"modules\":[]}");
}

TEST_CASE("status modules: text has a heading per box and module, and aligned columns") {
  std::string text = status::ModulesText({Mapi(), {"dc", "smb2", {{"kept_bytes", 0}}, {}}});
  CHECK(text ==
        "branch: mapi\n"
        "  port_bindings: 2 rows\n"
        "  SERVER          PROXY_PORT  REAL_PORT  INTERFACE  EXPIRES_IN_S\n"
        "  198.18.2.10     7830        49154      SAMR       7199\n"
        "  2001:2:0:2::10  7830        49154      SAMR       12\n"
        "dc: smb2: kept_bytes 0\n");
  CHECK(status::ModulesText({}) == "no module with a box-wide part is running\n");
  // The page shows the first rows of each table and how many more there are.
  CHECK(status::ModulesText({Mapi()}, 1) ==
        "branch: mapi\n"
        "  port_bindings: 2 rows\n"
        "  SERVER       PROXY_PORT  REAL_PORT  INTERFACE  EXPIRES_IN_S\n"
        "  198.18.2.10  7830        49154      SAMR       7199\n"
        "  ... 1 more (/api/modules has them all)\n");
  // On the page, in a <pre>: escaped, its lines kept (other control characters are not).
  CHECK(status::HtmlEscape("a<b\nc\rd", /*keep_newlines=*/true) == "a&lt;b\nc&#xfffd;d");
  CHECK(status::HtmlEscape("a\nb") == "a&#xfffd;b");
}
