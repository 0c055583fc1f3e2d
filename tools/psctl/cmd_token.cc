// tools/psctl/cmd_token.cc
//
// The token command: `psctl token new --role R [--namespaces a,b] --out FILE`
// makes a fresh bearer token (common/auth_token.h), writes it to FILE (mode
// 0600, never over an existing file) for the client's --token_file, and
// prints on stdout the line to add to every shard's --auth_tokens file (the
// token's SHA-256, role and namespaces; never the token):
//
//   psctl token new --role worker --namespaces jobA --out worker.token \
//       >> shard-tokens.txt
//
// It needs no shards. Thread safety: run by psctl's one thread.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/auth_token.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {
namespace {

// Writes `token` and a newline to a new file `path` with mode 0600.
absl::Status WriteNewSecretFile(const std::string& path,
                                const std::string& token) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) {
      return absl::AlreadyExistsError(absl::StrCat(
          "--out ", path,
          " already exists; psctl never overwrites a token file (remove it, "
          "or choose another name)"));
    }
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot create --out ", path, ": ", std::strerror(err)));
  }
  const std::string text = token + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const bool ok = done == text.size() && fsync(fd) == 0;
  const int err = errno;
  close(fd);
  if (!ok) {
    unlink(path.c_str());  // no half-written token file stays behind
    return absl::InternalError(absl::StrCat("cannot write --out ", path, ": ",
                                            std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace

Outcome CmdToken(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0] != "new") {
    return Usage(
        "usage: psctl token new --role reader|worker|admin "
        "[--namespaces a,b] --out FILE");
  }
  absl::StatusOr<TokenRole> role = ParseTokenRole(absl::GetFlag(FLAGS_role));
  if (!role.ok()) {
    return Usage(absl::StrCat("--role: ", role.status().message()));
  }
  std::vector<std::string> namespaces;
  const std::string list = absl::GetFlag(FLAGS_namespaces);
  if (!list.empty()) {
    for (absl::string_view ns : absl::StrSplit(list, ',')) {
      ns = absl::StripAsciiWhitespace(ns);
      if (ns.empty()) {
        return Usage(absl::StrCat("--namespaces '", list,
                                  "' has an empty name; give a,b,c"));
      }
      for (char c : ns) {
        if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '#' ||
            absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
          return Usage(absl::StrCat("--namespaces: '", ns,
                                    "' holds a space, '#' or a control "
                                    "character, which no namespace may"));
        }
      }
      namespaces.emplace_back(ns);
    }
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    return Usage("token new needs --out FILE (where the token is written)");
  }
  absl::StatusOr<std::string> token = GenerateToken();
  if (!token.ok()) return Failed(std::string(token.status().message()));
  if (absl::Status s = WriteNewSecretFile(out, *token); !s.ok()) {
    return Failed(std::string(s.message()));
  }
  const std::string line = TokenFileLine(*token, *role, namespaces);
  Json ns_json = Json::Array();
  for (const std::string& ns : namespaces) ns_json.Add(ns);
  ctx->out.Set("file", out)
      .Set("role", std::string(TokenRoleName(*role)))
      .Set("namespaces", std::move(ns_json))
      .Set("auth_tokens_line", line);
  ctx->text = line + "\n";
  std::fprintf(stderr,
               "psctl: wrote a new %s token to %s (mode 0600): give it to the "
               "client as --token_file or PSKIT_TOKEN_FILE; add the line "
               "printed on stdout to every shard's --auth_tokens file, then "
               "send the shards SIGHUP\n",
               std::string(TokenRoleName(*role)).c_str(), out.c_str());
  return Ok();
}

}  // namespace pskit::psctl
