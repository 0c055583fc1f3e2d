// common/malloc_tuning.h
//
// TuneMallocForLargeMessages: keeps glibc malloc from returning multi-MiB
// message buffers to the kernel after every request.
//
// Why: by default glibc serves blocks above a (dynamic, at most 32 MiB)
// threshold with mmap and trims freed heap tops with madvise, so every 4 MiB
// request buffer was a fresh mapping: page faults, kernel page clearing and
// LRU locking took about a fifth of all CPU time in ps-bench's push/pull
// profile (perf, 2 cores). Raising the thresholds keeps those pages mapped
// and reused; the cost is that a process holds its peak message memory.
//
// Thread safety: call once at the start of main(), before other threads.
#ifndef PSKIT_COMMON_MALLOC_TUNING_H_
#define PSKIT_COMMON_MALLOC_TUNING_H_

namespace pskit {

void TuneMallocForLargeMessages();

}  // namespace pskit

#endif  // PSKIT_COMMON_MALLOC_TUNING_H_
