// The mapi module's bindings across restarts (protocols/mapi/binding_store.h): the
// file's format, atomic save and load, a box that reloads what an earlier box kept
// (expired entries dropped), a corrupt or truncated file ignored, and the kernel
// fallback's DNAT rules as text (the namespace lab applies them for real).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "protocols/mapi/binding_store.h"
#include "protocols/mapi/mapi.h"

using namespace wanopt::protocols;
using namespace wanopt::protocols::epm;
using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

namespace {

// A fresh directory under the system's temporary one, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "wanopt-mapi-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()));
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

boost::asio::ip::address Ip(const char* text) { return make_address(text); }

MapiBox BoxKeepingIn(const std::string& file) {
  MapiSettings s;
  s.state_file = file;  // no fail_open_chain: unit tests leave the kernel alone
  return MapiBox(s);
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<uint16_t> Redirect(MapiBox& box, const char* server, uint16_t port) {
  return box.OnNewFlow(tcp::endpoint(make_address("198.18.1.10"), 40000), tcp::endpoint(make_address(server), port))
      .port;
}

}  // namespace

TEST_CASE("mapi bindings file: round trip, and every truncation or damage is refused") {
  std::vector<SavedBinding> bindings = {{Ip("198.18.2.10"), 7830, 49153, "EMSMDB", 1790000000},
                                        {Ip("10.0.0.1"), 7840, 1025, "NSPI", 1790000100},
                                        {Ip("10.0.0.1"), 7830, 6001, "12345778-1234-abcd-ef00-0123456789ac", 1},
                                        {Ip("2001:2:0:2::10"), 7830, 49155, "EMSMDB", 1790000200}};
  std::string text = FormatBindings(bindings);
  CHECK(text.find("\n2001:2:0:2::10 7830 49155 EMSMDB 1790000200\n") != std::string::npos);
  std::string error;
  auto parsed = ParseBindings(text, &error);
  REQUIRE_MESSAGE(parsed, error);
  CHECK(*parsed == bindings);
  auto empty = ParseBindings(FormatBindings({}), &error);
  REQUIRE(empty);
  CHECK(empty->empty());
  // Any file cut short (a crash while writing, a full disk) is refused, not half-read.
  for (size_t n = 0; n < text.size(); ++n) {
    CAPTURE(n);
    CHECK_FALSE(ParseBindings(std::string_view(text).substr(0, n), &error));
  }
  auto damaged = [&](std::string from, std::string to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return ParseBindings(t, &error);
  };
  CHECK_FALSE(damaged("198.18.2.10", "198.18.2.300"));
  CHECK_FALSE(damaged("2001:2:0:2::10", "2001:2:0:2::1g"));
  CHECK_FALSE(damaged("2001:2:0:2::10", "fe80::10%1"));  // a scoped address is never written
  CHECK_FALSE(damaged("2001:2:0:2::10", "::"));
  CHECK_FALSE(damaged("49153", "70000"));
  CHECK_FALSE(damaged(" EMSMDB", " EMS MDB"));
  CHECK_FALSE(damaged("1790000100", "soon"));
  CHECK_FALSE(damaged("end 4", "end 3"));
  CHECK_FALSE(damaged("wanopt-mapi-bindings 1", "wanopt-mapi-bindings 2"));
  CHECK(error.starts_with("not a bindings file"));
  CHECK_FALSE(ParseBindings(std::string("\0\1\2garbage\n", 12), &error));
  // Bounded: no more than kMaxSavedBindings are written.
  std::vector<SavedBinding> many(kMaxSavedBindings + 10, bindings[0]);
  auto capped = ParseBindings(FormatBindings(many), &error);
  REQUIRE(capped);
  CHECK(capped->size() == kMaxSavedBindings);
  // A link-local server's binding lives in memory only: its scope has no place here.
  auto scoped = boost::asio::ip::make_address_v6("fe80::10");
  scoped.scope_id(2);
  auto kept = ParseBindings(FormatBindings({{scoped, 7830, 49153, "EMSMDB", 1}, bindings[3]}), &error);
  REQUIRE(kept);
  CHECK(*kept == std::vector<SavedBinding>{bindings[3]});
}

TEST_CASE("mapi bindings file: a full table of the longest lines is saved and loaded back whole") {
  TempDir dir;
  std::string error;
  SavedBinding longest{Ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 65535, 65535, std::string(kMaxInterfaceChars, 'x'),
                       std::numeric_limits<int64_t>::min()};
  std::vector<SavedBinding> full(kMaxSavedBindings, longest);
  for (size_t i = 0; i < full.size(); ++i) full[i].interface[0] = "ABCDEFGHIJ"[i % 10];  // not all alike
  // The line-length bound is exact: these lines are the longest there are.
  std::string text = FormatBindings(full);
  CHECK(text.size() == std::string("wanopt-mapi-bindings 1\n").size() + kMaxSavedBindings * kMaxBindingLineBytes +
                           std::string("end 4096\n").size());
  CHECK(text.size() <= kMaxBindingsFileBytes);
  REQUIRE_MESSAGE(SaveBindings(dir.File("b"), full, &error), error);
  auto loaded = LoadBindings(dir.File("b"), &error);
  REQUIRE_MESSAGE(loaded, error);  // a restart keeps every binding it wrote
  CHECK(*loaded == full);
}

TEST_CASE("mapi bindings file: more than kMaxSavedBindings lines, or a larger file, is refused") {
  std::string error;
  std::string text = "wanopt-mapi-bindings 1\n";
  for (size_t i = 0; i <= kMaxSavedBindings; ++i) text += "198.18.2.10 7830 49153 EMSMDB 1790000000\n";
  text += "end " + std::to_string(kMaxSavedBindings + 1) + "\n";
  CHECK_FALSE(ParseBindings(text, &error));
  CHECK(error == "more than " + std::to_string(kMaxSavedBindings) + " bindings");

  TempDir dir;
  { std::ofstream(dir.File("big"), std::ios::binary) << std::string(kMaxBindingsFileBytes + 1, '\n'); }
  CHECK_FALSE(LoadBindings(dir.File("big"), &error));
  CHECK(error == dir.File("big") + ": larger than " + std::to_string(kMaxBindingsFileBytes) + " bytes");
}

TEST_CASE("mapi bindings file: saved atomically and loaded back, and no file means no bindings") {
  TempDir dir;
  std::string error;
  auto none = LoadBindings(dir.File("absent"), &error);
  REQUIRE(none);
  CHECK(none->empty());
  std::vector<SavedBinding> bindings = {{Ip("198.18.2.10"), 7830, 49153, "EMSMDB", 1790000000}};
  REQUIRE_MESSAGE(SaveBindings(dir.File("b"), bindings, &error), error);
  CHECK_FALSE(std::filesystem::exists(dir.File("b.tmp")));
  auto loaded = LoadBindings(dir.File("b"), &error);
  REQUIRE(loaded);
  CHECK(*loaded == bindings);
  CHECK_FALSE(SaveBindings(dir.File("no/such/dir/b"), bindings, &error));
  CHECK(error.find("no/such/dir/b.tmp") != std::string::npos);
}

TEST_CASE("mapi box: bindings survive a restart, expired ones do not") {
  TempDir dir;
  std::string file = dir.File("mapi-bindings");
  {
    MapiBox before = BoxKeepingIn(file);
    CHECK(before.Bind(Ip("198.18.2.10"), 7830, 49153, "EMSMDB"));
    CHECK(before.Bind(Ip("198.18.2.10"), 7840, 49154, "NSPI"));
  }
  CHECK(Read(file).find("198.18.2.10 7830 49153 EMSMDB ") != std::string::npos);
  {
    MapiBox v6 = BoxKeepingIn(file);  // adds an IPv6 server's binding to the file
    CHECK(v6.Bind(Ip("2001:2:0:2::10"), 7830, 49155, "EMSMDB"));
  }
  MapiBox after = BoxKeepingIn(file);  // the daemon started again
  auto port = Redirect(after, "198.18.2.10", 7830);
  REQUIRE(port);
  CHECK(*port == 49153);
  auto nspi = after.Lookup(Ip("198.18.2.10"), 7840);
  REQUIRE(nspi);
  CHECK(nspi->real_port == 49154);
  CHECK(nspi->interface == "NSPI");
  // The restored expiry is the saved one, not a fresh TTL: within the TTL from now.
  CHECK(nspi->expires <= MapiBox::Clock::now() + std::chrono::seconds(7200) + std::chrono::seconds(2));
  CHECK(nspi->expires > MapiBox::Clock::now() + std::chrono::seconds(7100));
  port = Redirect(after, "2001:2:0:2::10", 7830);
  REQUIRE(port);
  CHECK(*port == 49155);

  // A file with one binding expired and one live: only the live one comes back, and
  // the file is written again without the expired one. (`after` wrote what it loaded
  // back, on its own thread: done first.)
  after.WaitPersisted();
  std::string error;
  REQUIRE(SaveBindings(file,
                       {{Ip("198.18.2.10"), 7830, 49153, "EMSMDB", UnixNow() - 5},
                        {Ip("198.18.2.11"), 7830, 50000, "EMSMDB", UnixNow() + 600}},
                       &error));
  MapiBox third = BoxKeepingIn(file);
  CHECK_FALSE(Redirect(third, "198.18.2.10", 7830));
  port = Redirect(third, "198.18.2.11", 7830);
  REQUIRE(port);
  CHECK(*port == 50000);
  auto live = third.Lookup(Ip("198.18.2.11"), 7830);
  REQUIRE(live);
  CHECK(live->expires < MapiBox::Clock::now() + std::chrono::seconds(602));
  third.WaitPersisted();
  std::string text = Read(file);
  CHECK(text.find("198.18.2.10") == std::string::npos);
  CHECK(text.find("198.18.2.11 7830 50000 EMSMDB") != std::string::npos);
}

TEST_CASE("mapi box: a corrupt or truncated bindings file is ignored, and replaced by the next binding") {
  TempDir dir;
  std::string file = dir.File("mapi-bindings");
  std::string good = FormatBindings({{Ip("198.18.2.10"), 7830, 49153, "EMSMDB", UnixNow() + 600}});
  for (std::string bad : {good.substr(0, good.size() - 4), std::string("\x7f" "ELF\x02\x01\x01", 7), std::string()}) {
    { std::ofstream(file, std::ios::binary | std::ios::trunc) << bad; }
    MapiBox box = BoxKeepingIn(file);
    CHECK_FALSE(Redirect(box, "198.18.2.10", 7830));  // nothing restored, nothing broken
    CHECK(box.Bind(Ip("198.18.2.12"), 7830, 1032, "EMSMDB"));
    box.WaitPersisted();
    std::string error;
    auto rewritten = LoadBindings(file, &error);
    REQUIRE_MESSAGE(rewritten, error);
    REQUIRE(rewritten->size() == 1);
    CHECK((*rewritten)[0].real_port == 1032);
  }
  // A directory where the file should be: not readable as a file, ignored too.
  std::filesystem::create_directory(dir.File("dir"));
  MapiBox box = BoxKeepingIn(dir.File("dir"));
  CHECK_FALSE(Redirect(box, "198.18.2.10", 7830));
  CHECK(box.Bind(Ip("198.18.2.12"), 7830, 1032, "EMSMDB"));  // kept in memory even if not on disk
  CHECK(*Redirect(box, "198.18.2.12", 7830) == 1032);
}

TEST_CASE("mapi kernel fallback: one DNAT rule a binding, not for intercepted SYNs, inert at expiry") {
  std::vector<SavedBinding> bindings = {{Ip("198.18.2.10"), 7830, 49153, "EMSMDB", 1790000000},
                                        {Ip("2001:2:0:2::10"), 7830, 49155, "EMSMDB", 1790000000},
                                        {Ip("198.18.2.10"), 7840, 49154, "NSPI", 1790000060}};
  std::string rules = NatRules(Family::kIpv4, "WANOPT_MAPI", bindings);
  CHECK(rules ==
        "*nat\n"
        "-F WANOPT_MAPI\n"
        "-A WANOPT_MAPI -d 198.18.2.10/32 -p tcp --dport 7830 -m mark ! --mark 0x1 -m time --datestop "
        "2026-09-21T14:13:20 -j DNAT --to-destination 198.18.2.10:49153\n"
        "-A WANOPT_MAPI -d 198.18.2.10/32 -p tcp --dport 7840 -m mark ! --mark 0x1 -m time --datestop "
        "2026-09-21T14:14:20 -j DNAT --to-destination 198.18.2.10:49154\n"
        "COMMIT\n");
  // IPv6 servers' bindings, for ip6tables: the destination in brackets.
  CHECK(NatRules(Family::kIpv6, "WANOPT_MAPI", bindings) ==
        "*nat\n"
        "-F WANOPT_MAPI\n"
        "-A WANOPT_MAPI -d 2001:2:0:2::10/128 -p tcp --dport 7830 -m mark ! --mark 0x1 -m time --datestop "
        "2026-09-21T14:13:20 -j DNAT --to-destination [2001:2:0:2::10]:49155\n"
        "COMMIT\n");
  CHECK(NatRules(Family::kIpv4, "C", {}) == "*nat\n-F C\nCOMMIT\n");  // no bindings: the chain emptied
  CHECK(NatRules(Family::kIpv6, "C", {bindings[0]}) == "*nat\n-F C\nCOMMIT\n");
}

TEST_CASE("mapi box: a write of the bindings that does not finish holds up no connection") {
  // The state file's temporary name is a FIFO nobody reads: the box's writer blocks
  // opening it, as it would on a hung disk or a slow iptables-nft-restore. Before
  // the writer had a thread of its own, Bind (on a session's loop) blocked with it.
  TempDir dir;
  std::string file = dir.File("mapi-bindings");
  std::string tmp = file + ".tmp";
  REQUIRE(::mkfifo(tmp.c_str(), 0600) == 0);
  MapiBox box = BoxKeepingIn(file);
  CHECK(box.Bind(Ip("198.18.2.10"), 7830, 49153, "EMSMDB"));
  auto port = Redirect(box, "198.18.2.10", 7830);
  REQUIRE(port);
  CHECK(*port == 49153);
  CHECK(box.Bind(Ip("198.18.2.10"), 7840, 49154, "NSPI"));
  // Let the writer through: it cannot fsync a FIFO, so that write fails (logged).
  int fd = ::open(tmp.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  char sink[4096];
  while (::read(fd, sink, sizeof sink) > 0) {
  }
  ::close(fd);
  box.WaitPersisted();
  // A failed write is not taken for done: the next change writes every binding.
  CHECK(box.Bind(Ip("198.18.2.11"), 7830, 50000, "EMSMDB"));
  box.WaitPersisted();
  std::string text = Read(file);
  CHECK(text.find("198.18.2.10 7830 49153 EMSMDB") != std::string::npos);
  CHECK(text.find("198.18.2.10 7840 49154 NSPI") != std::string::npos);
  CHECK(text.find("198.18.2.11 7830 50000 EMSMDB") != std::string::npos);
}

TEST_CASE("mapi box: after a restart its table lists the kept bindings before any connection") {
  TempDir dir;
  std::string file = dir.File("mapi-bindings");
  std::string error;
  REQUIRE(SaveBindings(file, {{Ip("2001:2:0:2::10"), 7830, 49155, "EMSMDB", UnixNow() + 600}}, &error));
  MapiBox box = BoxKeepingIn(file);  // restarted: no flow, no bind yet
  auto tables = box.Tables();
  REQUIRE(tables.size() == 1);
  REQUIRE(tables[0].rows.size() == 1);
  CHECK(tables[0].rows[0][0] == "2001:2:0:2::10");
  CHECK(tables[0].rows[0][2] == "49155");
  box.WaitPersisted();
}

TEST_CASE("mapi kernel fallback: a rules write that fails is tried again with the next change, not at every request") {
  // Stand-ins for iptables-nft-restore and ip6tables-nft-restore, first on PATH: each
  // call is logged, and fails (as with the chain missing).
  TempDir dir;
  std::string calls = dir.File("calls");
  for (const char* name : {"iptables-nft-restore", "ip6tables-nft-restore"}) {
    std::string path = dir.File(name);
    std::ofstream(path) << "#!/bin/sh\ncat >/dev/null\necho " << name << " >> " << calls << "\nexit 1\n";
    REQUIRE(::chmod(path.c_str(), 0755) == 0);
  }
  std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
  REQUIRE(::setenv("PATH", (dir.File("") + ":" + old_path).c_str(), 1) == 0);
  {
    MapiSettings s;
    s.fail_open_chain = "WANOPT_MAPI";  // no state file
    MapiBox box(s);
    auto bind = [&](const char* server, uint16_t proxy_port, uint16_t real_port) {
      CHECK(box.Bind(Ip(server), proxy_port, real_port, "EMSMDB"));
      box.WaitPersisted();
      return Read(calls);
    };
    // The first write: IPv4's rules, and IPv6's chain emptied (quietly).
    CHECK(bind("198.18.2.10", 7830, 49153) == "iptables-nft-restore\nip6tables-nft-restore\n");
    // The same binding refreshed: nothing changed, the failure is not retried yet.
    CHECK(bind("198.18.2.10", 7830, 49153) == "iptables-nft-restore\nip6tables-nft-restore\n");
    // A new IPv4 binding: IPv4's rules again; no IPv6 server has one.
    CHECK(bind("198.18.2.10", 7840, 49154) == "iptables-nft-restore\nip6tables-nft-restore\niptables-nft-restore\n");
    // An IPv6 server's binding: both families.
    CHECK(bind("2001:2:0:2::10", 7830, 49155) ==
          "iptables-nft-restore\nip6tables-nft-restore\niptables-nft-restore\niptables-nft-restore\n"
          "ip6tables-nft-restore\n");
  }
  ::setenv("PATH", old_path.c_str(), 1);
}
