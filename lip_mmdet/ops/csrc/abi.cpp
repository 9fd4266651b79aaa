// The library's ABI version, checked by the loader (native.py) before any kernel is called:
// a library built from other sources (another argument layout) is never used.
#include <cstdint>

#include "checks.h"

extern "C" int64_t lip_mmdet_pooling_abi() { return LIP_MMDET_POOLING_ABI; }
