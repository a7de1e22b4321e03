// libFuzzer target: a peer file (wanopt/dre/peer_table.h: peers/<name>.idx) with any
// contents, as a damaged disk or a half-written file may leave it, read back by
// PeerTable::Get.
//
// Whatever the bytes: no crash, no leak; and what was read is kept: the file Get
// rewrote reads back, in a new table, to the same peering (seed, peer instance,
// last applied policy, the chunks it knows, and what each fingerprint the input
// named maps to).
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "wanopt/dre/peer_table.h"
#include "util/log.h"

using namespace wanopt;

namespace {

std::string directory;  // one per process, removed at exit

void RemoveDirectory() {
  std::error_code ec;
  std::filesystem::remove_all(directory, ec);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log::SetLevel(log::Level::kError);
  // tmpfs when there is one: the table writes its file back on every input.
  std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  std::string pattern = base + "/wanopt-peer-fuzz-XXXXXX";
  if (!mkdtemp(pattern.data())) std::abort();
  directory = pattern;
  std::atexit(RemoveDirectory);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = directory + "/fuzz.idx";
  if (std::FILE* out = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, out);
    std::fclose(out);
  } else {
    std::abort();
  }
  // The fingerprints the input's records name (record: kind, fingerprint, id).
  std::vector<dre::Fingerprint> named;
  for (size_t at = 40; at + 33 <= size; at += 33) {
    named.push_back(dre::FingerprintFromBytes(std::span<const uint8_t, 16>(data + at + 1, 16)));
  }
  dre::Seed seed;
  uint64_t instance;
  std::optional<Policy> applied;
  size_t known;
  std::vector<std::optional<datastore::ContentId>> found;
  {
    dre::PeerTable table(directory);
    auto peer = table.Get("fuzz", std::nullopt);
    seed = peer->seed();
    instance = peer->peer_instance();
    applied = peer->last_applied();
    known = peer->size();
    for (const auto& fingerprint : named) found.push_back(peer->Find(fingerprint));
  }
  dre::PeerTable table(directory);
  auto peer = table.Get("fuzz", std::nullopt);
  if (peer->seed() != seed || peer->peer_instance() != instance || peer->last_applied() != applied ||
      peer->size() != known) {
    std::abort();
  }
  for (size_t i = 0; i < named.size(); ++i) {
    if (peer->Find(named[i]) != found[i]) std::abort();
  }
  return 0;
}
