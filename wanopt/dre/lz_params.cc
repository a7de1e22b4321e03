#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_getCParams, ZSTD_estimateCStreamSize_usingCParams
#include "wanopt/dre/lz_params.h"

#include <zstd.h>

namespace wanopt::dre {

namespace {

ZSTD_compressionParameters ParamsOf(int level, int window_log) {
  ZSTD_compressionParameters p = ZSTD_getCParams(level, uint64_t{1} << window_log, 0);
  p.windowLog = static_cast<unsigned>(window_log);
  return p;
}

}  // namespace

void ApplyLzLevel(ZSTD_CCtx* cctx, int level, int window_log) {
  ZSTD_compressionParameters p = ParamsOf(level, window_log);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, static_cast<int>(p.windowLog));
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, static_cast<int>(p.hashLog));
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_chainLog, static_cast<int>(p.chainLog));
}

uint64_t LzContextBytes(int level, int window_log) {
  return ZSTD_estimateCStreamSize_usingCParams(ParamsOf(level, window_log));
}

}  // namespace wanopt::dre
