#include "worker/trace.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace pskit::worker {

absl::StatusOr<std::unique_ptr<TraceWriter>> TraceWriter::Open(
    const std::string& path, int rank) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write the trace file '", path, "': ", std::strerror(errno)));
  }
  std::fputs("[\n", f);
  return std::unique_ptr<TraceWriter>(new TraceWriter(f, rank));
}

TraceWriter::~TraceWriter() {
  std::fputs("\n]\n", f_);
  std::fclose(f_);
}

void TraceWriter::Add(const char* name, absl::Time start, absl::Time end,
                      int track) {
  std::fprintf(f_,
               "%s{\"name\":\"%s\",\"cat\":\"step\",\"ph\":\"X\",\"ts\":%lld,"
               "\"dur\":%lld,\"pid\":%d,\"tid\":%d}",
               first_ ? "" : ",\n", name,
               static_cast<long long>(absl::ToUnixMicros(start)),
               static_cast<long long>(absl::ToInt64Microseconds(end - start)),
               rank_, track);
  first_ = false;
}

}  // namespace pskit::worker
