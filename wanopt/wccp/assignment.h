// How the designated web cache splits a service group's traffic between the caches
// in the view (draft-wilson-wrec-wccp-v2 5.5 and 5.6). Pure functions.
//
// Hash assignment: the router hashes each packet into one of 256 buckets (on the
// fields the service's flags name) and sends it to the bucket's cache. Buckets go
// to caches in proportion to their weights (all 0: equal shares), in contiguous runs
// in address order, so that a cache joining or leaving moves as few buckets as
// contiguous shares allow.
//
// Mask assignment: the router ANDs the packet's fields with one mask and looks the
// result up in a value table. The mask takes its bits on the field the service
// hashes on (source or destination address): the 2^n values it can give go to the
// caches round robin in address order.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "wanopt/wccp/message.h"

namespace wanopt::wccp {

struct CacheWeight {
  uint32_t ip = 0;
  uint16_t weight = 0;
};

// Bucket -> index into `caches` as given (the Assignment Info's cache list must be in
// that order). REQUIRES: 1 <= caches.size() <= kMaxCaches.
std::array<uint8_t, 256> AssignBuckets(const std::vector<CacheWeight>& caches);

// A mask and value set over `caches` (in the order given) for a service whose flags
// say which address it hashes on. REQUIRES: 1 <= caches.size() <= kMaxCaches.
MaskValueSet AssignMask(const std::vector<uint32_t>& caches, uint32_t service_flags);
inline constexpr uint32_t kDefaultIpMask = 0x00001741;  // Cisco's default: 6 bits, 64 values

// Buckets of `ip` in a hash assignment over `caches` (the counts a status page shows).
unsigned BucketsOf(const std::array<uint8_t, 256>& buckets, const std::vector<uint32_t>& caches, uint32_t ip);

}  // namespace wanopt::wccp
