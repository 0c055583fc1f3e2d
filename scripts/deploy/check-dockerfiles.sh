#!/usr/bin/env bash
# Static check of docker/Dockerfile and docker/Dockerfile.cuda, so the CUDA
# image (which cannot be built on the project's hosts) and the CPU one stay
# buildable between image builds. It fails (exit 1, one line per problem) when
#   - a COPY source (not --from=stage) is missing from the repository or is
#     excluded from the build context by .dockerignore;
#   - a RUN line runs a script (a path a COPY put in the image) whose source is
#     missing or not executable;
#   - a FROM uses ${ARG} without a matching ARG before the first FROM;
#   - docker/build-pskit.sh builds a target that no CMakeLists.txt defines with
#     add_executable, or sets a PSKIT_* cache option the CMake files lack.
#
#   scripts/deploy/check-dockerfiles.sh             check this checkout
#   scripts/deploy/check-dockerfiles.sh --self-test plant bad names in a copy
#                                                   and require each to fail
# Called by scripts/check-deploy.sh in CI. Needs bash and python3.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"

check() {
  python3 - "$1" <<'PY'
import fnmatch, os, re, sys

root = sys.argv[1]
problems = []

def ignored_patterns():
    path = os.path.join(root, ".dockerignore")
    pats = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.rstrip("/"))
    return pats

def is_ignored(rel, pats):
    """True when .dockerignore (last match wins, ! re-includes) drops rel or
    a folder above it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pat in pats:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.lstrip("/")
        for cand in prefixes:
            if fnmatch.fnmatchcase(cand, p) or (
                    p.startswith("**/") and
                    fnmatch.fnmatchcase(cand.split("/")[-1], p[3:])):
                result = not neg
                break
    return result

def instructions(path):
    """(lineno, keyword, rest) per instruction, continuation lines joined."""
    out, buf, start = [], "", 0
    for n, line in enumerate(open(path), 1):
        s = line.rstrip("\n")
        if not buf and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if buf and s.lstrip().startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        kw, _, rest = buf.strip().partition(" ")
        out.append((start, kw.upper(), rest.strip()))
        buf = ""
    return out

pats = ignored_patterns()
for name in ("docker/Dockerfile", "docker/Dockerfile.cuda"):
    path = os.path.join(root, name)
    if not os.path.exists(path):
        problems.append(f"{name}: missing")
        continue
    seen_from, args, copied = False, set(), {}
    for n, kw, rest in instructions(path):
        where = f"{name}:{n}"
        if kw == "ARG" and not seen_from:
            args.add(rest.split("=")[0])
        elif kw == "FROM":
            seen_from = True
            for var in re.findall(r"\$\{?(\w+)", rest):
                if var not in args:
                    problems.append(f"{where}: FROM uses ${{{var}}} but no ARG {var} precedes the first FROM")
        elif kw in ("COPY", "ADD"):
            words = rest.split()
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            *srcs, dest = words
            for src in srcs:
                rel = os.path.normpath(src).lstrip("./") or "."
                if not os.path.exists(os.path.join(root, rel)):
                    problems.append(f"{where}: COPY source '{src}' does not exist in the repository")
                elif rel != "." and is_ignored(rel, pats):
                    problems.append(f"{where}: COPY source '{src}' is excluded by .dockerignore")
                else:
                    copied[dest.rstrip("/")] = rel
        elif kw == "RUN":
            for tok in re.findall(r"(/[\w./-]+)", rest):
                if tok.endswith(".sh") and not any(
                        tok == d or tok.startswith(d + "/") for d in copied):
                    problems.append(f"{where}: RUN runs {tok}, which no COPY before it puts in the image")
                # A token under a COPY destination is a file of ours.
                for dest, rel in copied.items():
                    if tok == dest or tok.startswith(dest + "/"):
                        src = rel + tok[len(dest):] if tok != dest else rel
                        full = os.path.join(root, src)
                        if tok.endswith(".sh") or tok == dest:
                            if not os.path.isfile(full):
                                problems.append(f"{where}: RUN names {tok}, but {src} does not exist")
                            elif not os.access(full, os.X_OK):
                                problems.append(f"{where}: RUN runs {tok}, but {src} is not executable (chmod +x)")
                        break
            for tok in re.findall(r"\S+\.sh\b", rest):
                if not tok.startswith("/") and not os.path.isfile(os.path.join(root, tok)):
                    problems.append(f"{where}: RUN names {tok}, which does not exist")

# The CMake targets and options docker/build-pskit.sh relies on.
script = os.path.join(root, "docker/build-pskit.sh")
if os.path.exists(script):
    text = open(script).read()
    m = re.search(r"^TARGETS=\(([^)]*)\)", text, re.M)
    targets = m.group(1).split() if m else []
    if not targets:
        problems.append("docker/build-pskit.sh: no TARGETS=(...) line")
    cmake_text = ""
    for d, _, files in os.walk(root):
        if any(part in (".git", "build") or part.startswith("build-")
               for part in os.path.relpath(d, root).split(os.sep)):
            continue
        if "CMakeLists.txt" in files:
            cmake_text += open(os.path.join(d, "CMakeLists.txt")).read()
    defined = set(re.findall(r"add_executable\(\s*([\w.+-]+)", cmake_text))
    for t in targets:
        if t not in defined:
            problems.append(f"docker/build-pskit.sh: target '{t}' is not an add_executable in any CMakeLists.txt")
    for opt in sorted(set(re.findall(r"-D(PSKIT_\w+)=", text))):
        if not re.search(r"(option|set)\(\s*" + opt + r"\b", cmake_text):
            problems.append(f"docker/build-pskit.sh: -D{opt} is not an option of the CMake files")
else:
    problems.append("docker/build-pskit.sh: missing")

for p in problems:
    print(f"check-dockerfiles: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

if [ "${1:-}" = "--self-test" ]; then
  # Each case plants one error in a copy of the tree and requires the
  # check to fail (scripts/deploy/self-test-lib.sh).
  # shellcheck source=scripts/deploy/self-test-lib.sh
  . "$root/scripts/deploy/self-test-lib.sh"
  cases=(
    "COPY of a missing folder|sed -i 's|^COPY tools /src/tools|COPY toolz /src/tools|' docker/Dockerfile.cuda"
    "RUN of a missing script|sed -i 's|/src/docker/build-pskit.sh /src /opt/pskit cuda|/src/docker/build-pskit2.sh /src /opt/pskit cuda|' docker/Dockerfile.cuda"
    "unexecutable script|chmod -x docker/build-pskit.sh"
    "unknown CMake target|sed -i 's|^TARGETS=(ps-server |TARGETS=(ps-servr |' docker/build-pskit.sh"
    "unknown CMake option|sed -i 's|-DPSKIT_BUILD_TESTS=OFF|-DPSKIT_BUILD_TEST=OFF|' docker/build-pskit.sh"
    "COPY source excluded by .dockerignore|echo worker >> .dockerignore"
    "FROM with an undeclared ARG|sed -i 's|^FROM \${RUNTIME_BASE}|FROM \${RUNTIME_IMAGE}|' docker/Dockerfile.cuda"
  )
  pskit_self_test check-dockerfiles "$root" check "${cases[@]}"
fi

check "${1:-$root}"
echo "check-dockerfiles: docker/Dockerfile and docker/Dockerfile.cuda reference only existing files, scripts and CMake targets"
