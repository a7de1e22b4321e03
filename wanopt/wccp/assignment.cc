#include "wanopt/wccp/assignment.h"

#include <bit>

namespace wanopt::wccp {

std::array<uint8_t, 256> AssignBuckets(const std::vector<CacheWeight>& caches) {
  std::array<uint8_t, 256> buckets;
  buckets.fill(kBucketUnassigned);
  if (caches.empty()) return buckets;
  uint64_t total = 0;
  for (const auto& c : caches) total += c.weight;
  bool equal = total == 0;
  if (equal) total = caches.size();
  // Cache i ends its run at bucket round(256 * (sum of weights up to i) / total):
  // every bucket assigned, shares within one bucket of exact.
  uint64_t so_far = 0;
  unsigned start = 0;
  for (size_t i = 0; i < caches.size(); ++i) {
    so_far += equal ? 1 : caches[i].weight;
    unsigned end = static_cast<unsigned>((256 * so_far + total / 2) / total);
    for (unsigned b = start; b < end && b < 256; ++b) buckets[b] = static_cast<uint8_t>(i);
    start = end;
  }
  return buckets;
}

MaskValueSet AssignMask(const std::vector<uint32_t>& caches, uint32_t service_flags) {
  MaskValueSet set;
  bool on_destination = (service_flags & service_flag::kDstIpHash) && !(service_flags & service_flag::kSrcIpHash);
  (on_destination ? set.mask.dst_ip_mask : set.mask.src_ip_mask) = kDefaultIpMask;
  if (caches.empty()) return set;
  // Every value the mask can produce: the subsets of its bits.
  const uint32_t mask = kDefaultIpMask;
  unsigned n = static_cast<unsigned>(std::popcount(mask));
  for (uint32_t index = 0; index < (1u << n); ++index) {
    uint32_t value = 0;
    unsigned bit = 0;
    for (unsigned pos = 0; pos < 32; ++pos) {
      if (mask >> pos & 1) {
        if (index >> bit & 1) value |= 1u << pos;
        ++bit;
      }
    }
    ValueElement v;
    (on_destination ? v.dst_ip : v.src_ip) = value;
    v.cache_ip = caches[index % caches.size()];
    set.values.push_back(v);
  }
  return set;
}

unsigned BucketsOf(const std::array<uint8_t, 256>& buckets, const std::vector<uint32_t>& caches, uint32_t ip) {
  unsigned n = 0;
  for (uint8_t b : buckets) {
    if (b != kBucketUnassigned && (b & 0x7F) < caches.size() && caches[b & 0x7F] == ip) ++n;
  }
  return n;
}

}  // namespace wanopt::wccp
