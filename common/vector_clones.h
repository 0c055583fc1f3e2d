// common/vector_clones.h
//
// PSKIT_VECTOR_CLONES: compiles a hot loop three times, for x86-64-v4
// (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline x86-64 (SSE2) the
// binaries otherwise target, and picks one when the program loads (GCC's
// target_clones, an ifunc). The element-wise update loops are 2-3 times
// faster with 8 or 16 lanes than with SSE2's 4 (tests/bench/micro_bench.cc).
//
// Put it on a free function (GCC does not clone virtual functions). The
// clones compute the same bits: the project builds with -ffp-contract=off, so
// no clone fuses a multiply and an add the baseline rounds twice, and these
// loops do no floating-point reductions a wider vector would reorder.
//
// Example:
//   PSKIT_VECTOR_CLONES void Scale(float a, float* __restrict x, size_t n) {
//     for (size_t i = 0; i < n; ++i) x[i] *= a;
//   }
//
// Empty with clang (its fuzzing and thread-safety builds need no speed) and
// under the sanitizers (an ifunc resolver runs before they are set up).
//
// Thread safety: a macro; the loader picks each clone once, before main.
#ifndef PSKIT_COMMON_VECTOR_CLONES_H_
#define PSKIT_COMMON_VECTOR_CLONES_H_

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define PSKIT_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PSKIT_VECTOR_CLONES
#endif

#endif  // PSKIT_COMMON_VECTOR_CLONES_H_
