#include "tools/psctl/npy.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pskit::psctl {

std::string NpyHeader(const google::protobuf::RepeatedField<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < shape.size(); ++i) {
    absl::StrAppend(&dict, i > 0 ? ", " : "", shape[i]);
  }
  absl::StrAppend(&dict, shape.size() == 1 ? ",), }" : "), }");
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict;
}

absl::Status WriteAtomically(const std::string& path, const std::string& header,
                             absl::Span<const float> values) {
  static_assert(std::endian::native == std::endian::little,
                ".npy '<f4' data is written as the host's floats");
  const std::string tmp = absl::StrCat(path, ".tmp-", getpid());
  const int fd =
      open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  auto write_all = [fd](const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = write_all(header.data(), header.size()) &&
            write_all(reinterpret_cast<const char*>(values.data()),
                      values.size() * sizeof(float)) &&
            fsync(fd) == 0;
  const int saved = errno;
  ok = close(fd) == 0 && ok;
  if (ok && rename(tmp.c_str(), path.c_str()) == 0) return absl::OkStatus();
  const int err = ok ? errno : saved;
  unlink(tmp.c_str());
  return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ",
                                             std::strerror(err),
                                             "; nothing was written there"));
}

}  // namespace pskit::psctl
