// tests/fuzz/fuzz_input.h
//
// Writing inputs in the layout FuzzedDataProvider reads them, so a target
// can make its seed corpus from real messages built with the protobuf
// classes (scripts/fuzz.sh --write-seeds runs each target with
// PSKIT_FUZZ_WRITE_SEEDS=DIR; WriteSeedsIfAsked writes the seeds there and
// exits).
//
// FuzzedDataProvider takes bytes and strings from the front of the input
// and integers from the back (the last byte first, as the most significant
// byte). FuzzInputWriter mirrors that: Bytes() appends at the front part,
// Int() at the back part, and Finish() joins them.
//
// Example (a target that reads an op, a length and that many bytes):
//   FuzzInputWriter w;
//   w.Small(kPull);
//   w.Int<uint16_t>(req.ByteSizeLong());
//   w.Bytes(req.SerializeAsString());
//   std::string input = w.Finish();
//
// Thread safety: a writer is used by one thread.
#ifndef PSKIT_TESTS_FUZZ_FUZZ_INPUT_H_
#define PSKIT_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace pskit::fuzz {

class FuzzInputWriter {
 public:
  // The next ConsumeIntegral<T>() (full range) reads `v`.
  template <typename T>
  void Int(T v) {
    // Read back to front, most significant byte first: stored reversed.
    std::string bytes;
    for (size_t i = 0; i < sizeof(T); ++i) {
      bytes.push_back(static_cast<char>((static_cast<uint64_t>(v) >>
                                         (8 * (sizeof(T) - 1 - i))) & 0xff));
    }
    back_.insert(0, bytes);
  }
  // The next ConsumeIntegralInRange(min, max) with max - min < 256 (which
  // reads one byte) reads `v`, giving min + v for v <= max - min.
  void Small(uint8_t v) { Int<uint8_t>(v); }
  // The next ConsumeBytesAsString(bytes.size()) reads `bytes`.
  void Bytes(absl::string_view bytes) {
    front_.append(bytes.data(), bytes.size());
  }
  // The next ConsumeRandomLengthString(max) (max >= s.size()) reads `s`:
  // a backslash is doubled, and a backslash and one other byte end it.
  void String(absl::string_view s) {
    for (char c : s) {
      front_.push_back(c);
      if (c == '\\') front_.push_back(c);
    }
    front_.append("\\;");
  }
  std::string Finish() const { return front_ + back_; }

 private:
  std::string front_;
  std::string back_;  // the integers, last read first
};

using Seeds = std::vector<std::pair<std::string, std::string>>;

// When the environment variable PSKIT_FUZZ_WRITE_SEEDS names a directory,
// writes each (file name, input) of `make()` there and exits 0; otherwise
// does nothing. Called from LLVMFuzzerInitialize.
inline void WriteSeedsIfAsked(const std::function<Seeds()>& make) {
  const char* dir = std::getenv("PSKIT_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == '\0') return;
  for (const auto& [name, input] : make()) {
    const std::string path = std::string(dir) + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(input.data(), static_cast<std::streamsize>(input.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write seed %s\n", path.c_str());
      std::exit(1);
    }
  }
  std::exit(0);
}

}  // namespace pskit::fuzz

#endif  // PSKIT_TESTS_FUZZ_FUZZ_INPUT_H_
