#include "common/malloc_tuning.h"

#include <malloc.h>

namespace pskit {

void TuneMallocForLargeMessages() {
#if defined(__GLIBC__)
  // Blocks up to 256 MiB come from the heap, and up to 1 GiB of free heap
  // top is kept instead of being handed back.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace pskit
