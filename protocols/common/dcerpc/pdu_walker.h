// PduWalker: follows one direction's DCE/RPC PDUs as the bytes stream by, without
// copying what it does not need. Headers are read as they pass and only the PDUs
// `wanted` says yes to are assembled (bind, RTS: small ones); the rest is skipped by
// its frag_length. Used by the mapi module on raw TCP and by the rpch module inside
// RPC over HTTP channel bodies.
//
// Memory: one PDU at most (frag_length <= limits.max_frag), only while assembling.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "protocols/common/dcerpc/dcerpc.h"

namespace wanopt::protocols::dcerpc {

class PduWalker {
 public:
  explicit PduWalker(Limits limits = {}) : limits_(limits) {}

  // Feeds the next bytes; calls on_pdu(const Pdu&) for each whole PDU whose type
  // wanted(PType) accepts (the Pdu aliases a buffer valid during that call only).
  // False on malformed input: nothing is kept and the caller stops feeding.
  template <class Wanted, class OnPdu>
  bool Feed(std::span<const uint8_t> data, Wanted wanted, OnPdu on_pdu) {
    while (!data.empty()) {
      if (skip_ > 0) {
        size_t n = std::min(skip_, data.size());
        skip_ -= n;
        data = data.subspan(n);
        continue;
      }
      size_t need = pdu_.size() < kHeaderSize ? kHeaderSize : frag_length_;
      size_t n = std::min(need - pdu_.size(), data.size());
      pdu_.insert(pdu_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(n));
      data = data.subspan(n);
      if (pdu_.size() == kHeaderSize && frag_length_ == 0) {
        Split split = SplitPdu(pdu_, limits_);
        if (split.kind == Split::kMalformed) {
          pdu_.clear();
          return false;
        }
        frag_length_ = split.kind == Split::kNeedMore ? split.needed : kHeaderSize;
        PType ptype = static_cast<PType>(pdu_[2]);
        ++pdus_;
        if (!wanted(ptype)) {
          skip_ = frag_length_ - kHeaderSize;
          pdu_.clear();
          frag_length_ = 0;
          continue;
        }
      }
      if (frag_length_ && pdu_.size() == frag_length_) {
        auto pdu = ParsePdu(pdu_, limits_);
        if (!pdu) return false;
        on_pdu(*pdu);
        pdu_.clear();
        frag_length_ = 0;
      }
    }
    return true;
  }

  // True between PDUs (nothing of a PDU fed yet).
  bool at_boundary() const { return pdu_.empty() && skip_ == 0; }
  // PDUs whose header has passed.
  uint64_t pdus() const { return pdus_; }

 private:
  Limits limits_;
  std::vector<uint8_t> pdu_;
  size_t frag_length_ = 0;
  size_t skip_ = 0;
  uint64_t pdus_ = 0;
};

}  // namespace wanopt::protocols::dcerpc
