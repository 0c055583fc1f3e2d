// tools/psrun/launch/console.h
//
// Console: psrun's output. Child lines and psrun's own go to stdout or
// stderr whole; in live mode a status line stays at the bottom of the
// terminal: erased before other output, redrawn after.
//
// Thread safety: not thread-safe; only the launcher's thread writes.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_CONSOLE_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_CONSOLE_H_

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/string_view.h"

namespace pskit::launch {

// Writes child lines and psrun's own lines, and keeps the live status line
// at the bottom of a terminal: erased before other output, redrawn after.
class Console {
 public:
  explicit Console(bool live) : live_(live) {}

  void Out(absl::string_view line) {
    EraseStatus();
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
  }
  void Err(absl::string_view line) {
    EraseStatus();
    std::fflush(stdout);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }
  // Ends a batch of output: redraws `status` (live mode) and flushes.
  void Flush(const std::string& status) {
    if (live_ && !status.empty()) {
      EraseStatus();
      std::string s = status;
      const size_t width = Width();
      if (s.size() >= width) s.resize(width - 1);
      std::fputs(s.c_str(), stdout);
      shown_ = true;
    }
    std::fflush(stdout);
  }
  void EraseStatus() {
    if (shown_) std::fputs("\r\033[K", stdout);
    shown_ = false;
  }

 private:
  static size_t Width() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10) {
      return ws.ws_col;
    }
    return 80;
  }
  bool live_;
  bool shown_ = false;
};

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_CONSOLE_H_
