// tests/fuzz/fuzz_check.h
//
// FUZZ_CHECK(cond): the fuzz targets' assertion. When `cond` is false it
// prints the file, line and condition to stderr and aborts, which libFuzzer
// reports as a crash and saves the input for (unlike assert, it is not
// compiled out by NDEBUG). `cond` is evaluated once. QuietLogs() turns off
// protobuf's and spdlog's logging (each refused message would otherwise
// print a line, which slows fuzzing down).
//
// Thread safety: FUZZ_CHECK from any thread; QuietLogs once, before fuzzing.
#ifndef PSKIT_TESTS_FUZZ_FUZZ_CHECK_H_
#define PSKIT_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"
#include "spdlog/spdlog.h"

#define FUZZ_CHECK(cond)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__,     \
                   __LINE__, #cond);                                       \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

namespace pskit::fuzz {
inline void QuietLogs() {
  google::protobuf::SetLogHandler(nullptr);
  spdlog::set_level(spdlog::level::off);
}
}  // namespace pskit::fuzz

#endif  // PSKIT_TESTS_FUZZ_FUZZ_CHECK_H_
