// server/address_file.cc: AdvertisedAddress and the atomic --address_file
// write.
#include "server/address_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace pskit {
namespace {

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

bool IsWildcardHost(absl::string_view host) {
  return host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::";
}

std::string AdvertisedAddress(absl::string_view listen_host, int port,
                              absl::string_view advertise_host,
                              absl::string_view hostname) {
  absl::string_view host = advertise_host;
  if (host.empty()) host = IsWildcardHost(listen_host) ? hostname : listen_host;
  // A bare IPv6 literal needs brackets before ":PORT".
  if (absl::StrContains(host, ':') && !absl::StartsWith(host, "[")) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

absl::Status CheckAddressFileDir(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("--address_file is empty");
  }
  const std::string dir = DirOf(path);
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the directory of --address_file ", path, " (", dir,
        ") does not exist or is not a directory; create it first"));
  }
  return absl::OkStatus();
}

absl::Status WriteAddressFile(const std::string& path,
                              absl::string_view address) {
  if (absl::Status s = CheckAddressFileDir(path); !s.ok()) return s;
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const std::string line = absl::StrCat(address, "\n");
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                      0644);
  if (fd < 0) return Errno("cannot create", tmp);
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = Errno("cannot write", tmp);
      close(fd);
      unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    absl::Status s = Errno("cannot fsync", tmp);
    close(fd);
    unlink(tmp.c_str());
    return s;
  }
  if (close(fd) != 0) {
    absl::Status s = Errno("cannot close", tmp);
    unlink(tmp.c_str());
    return s;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno(absl::StrCat("cannot rename ", tmp, " to"), path);
    unlink(tmp.c_str());
    return s;
  }
  // The rename itself survives a crash only once the directory is synced;
  // a file system that cannot sync a directory still renamed atomically.
  const std::string dir = DirOf(path);
  if (const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace pskit
