#!/usr/bin/env bash
# Static check of the compose stack (deploy/compose), for CI and for what the
# test hosts cannot run (Grafana: no image without a registry). Fails (exit 1,
# one line per problem) when
#   - compose.yaml does not parse, a service runs a binary the pskit image
#     does not build, or a relative bind-mount source is missing;
#   - a shard lacks a named volume on /data (--data_dir=/data), a
#     stop_grace_period of at least 30 s, or a --metrics_port;
#   - a worker's --shards is not exactly the shard services on their ports in
#     shard-index order, or it keeps the image's shard health check;
#   - prometheus.yml does not scrape exactly every pskit service on its
#     --metrics_port, by service name (and `promtool check config` fails where
#     promtool is installed);
#   - Grafana's provisioning does not point at the stack's Prometheus, its
#     dashboard provider path is not where compose.yaml mounts
#     deploy/grafana/pskit-dashboard.json, a panel's data source is neither a
#     provisioned uid nor a datasource variable of the dashboard, or Grafana is
#     not behind the `grafana` profile.
#
#   scripts/deploy/check-compose.sh              check this checkout
#   scripts/deploy/check-compose.sh --self-test  plant errors in a copy and
#                                                require each to fail
# Needs python3 with PyYAML (Debian's python3-yaml; scripts/install-deps.sh
# installs it).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"

check() {
  python3 - "$1" <<'PY' || return 1
import json, os, re, sys
import yaml

root = sys.argv[1]
cdir = os.path.join(root, "deploy/compose")
problems = []
def bad(msg): problems.append(msg)

def seconds(v):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m else 0

def flags(cmd):
    out = {}
    for a in cmd[1:]:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
    return out

try:
    compose = yaml.safe_load(open(os.path.join(cdir, "compose.yaml")))
except Exception as e:
    print(f"check-compose: compose.yaml: {e}", file=sys.stderr)
    sys.exit(1)
services = compose.get("services") or {}
named_volumes = set((compose.get("volumes") or {}).keys())
script = open(os.path.join(root, "docker/build-pskit.sh")).read()
binaries = set(re.search(r"^TARGETS=\(([^)]*)\)", script, re.M).group(1).split())

pskit, shards, workers = {}, {}, {}
for name, svc in services.items():
    for vol in svc.get("volumes") or []:
        src = vol.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.normpath(os.path.join(cdir, src))):
                bad(f"compose.yaml: {name}: bind-mount source {src} does not exist")
    image = str(svc.get("image", ""))
    if "PSKIT_IMAGE" not in image:
        continue
    cmd = [str(c) for c in svc.get("command") or []]
    if not cmd or cmd[0] not in binaries:
        bad(f"compose.yaml: {name}: command {cmd[:1]} is not one of the image's binaries {sorted(binaries)}")
        continue
    f = flags(cmd)
    pskit[name] = f
    if "metrics_port" not in f:
        bad(f"compose.yaml: {name}: no --metrics_port=N, so Prometheus cannot scrape it")
    if cmd[0] == "ps-server":
        shards[name] = f
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes") or []}
        if f.get("data_dir") != "/data" or mounts.get("/data") not in named_volumes:
            bad(f"compose.yaml: {name}: needs --data_dir=/data on a named volume mounted at /data")
        if seconds(svc.get("stop_grace_period", "0s")) < 30:
            bad(f"compose.yaml: {name}: stop_grace_period under 30 s cuts off the final checkpoint")
    elif cmd[0] == "ps-worker":
        workers[name] = f
        if (svc.get("healthcheck") or {}).get("test") != ["NONE"]:
            bad(f"compose.yaml: {name}: a worker must turn off the image's shard health check (test: [\"NONE\"])")

order = sorted(shards, key=lambda s: int(shards[s].get("shard_index", 0)))
want_shards = ",".join(f"{s}:{shards[s].get('listen', ':7000').rsplit(':', 1)[1]}" for s in order)
for s in order:
    if int(shards[s].get("num_shards", 1)) != len(shards):
        bad(f"compose.yaml: {s}: --num_shards={shards[s].get('num_shards')} but the stack has {len(shards)} shards")
for w, f in workers.items():
    if f.get("shards") != want_shards:
        bad(f"compose.yaml: {w}: --shards={f.get('shards')}, the shard services are {want_shards}")
if not any(f.get("role") == "evaluator" and "target_accuracy" in f for f in workers.values()):
    bad("compose.yaml: no evaluator with --target_accuracy ends the job")

# Prometheus scrapes every pskit process by service name.
try:
    prom = yaml.safe_load(open(os.path.join(cdir, "prometheus.yml")))
    targets = {t for job in prom.get("scrape_configs", [])
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
except Exception as e:
    bad(f"prometheus.yml: {e}")
    targets = set()
want = {f"{n}:{f.get('metrics_port')}" for n, f in pskit.items()}
for t in sorted(want - targets):
    bad(f"prometheus.yml: does not scrape {t}")
for t in sorted(targets - want):
    bad(f"prometheus.yml: scrapes {t}, which is no pskit service of compose.yaml")

# Grafana: profile, provisioning, dashboard.
g = services.get("grafana")
if not g:
    bad("compose.yaml: no grafana service")
else:
    if "grafana" not in (g.get("profiles") or []):
        bad("compose.yaml: grafana is not behind the `grafana` profile")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in g.get("volumes") or []}
    prov_host = mounts.get("/etc/grafana/provisioning")
    if not prov_host:
        bad("compose.yaml: grafana does not mount provisioning at /etc/grafana/provisioning")
    dash_target = next((t for t, s in mounts.items() if s.endswith("pskit-dashboard.json")), None)
    if not dash_target:
        bad("compose.yaml: grafana does not mount deploy/grafana/pskit-dashboard.json")
    if prov_host:
        pdir = os.path.normpath(os.path.join(cdir, prov_host))
        uids = {}
        for fn in sorted(os.listdir(os.path.join(pdir, "datasources"))):
            for ds in yaml.safe_load(open(os.path.join(pdir, "datasources", fn))).get("datasources", []):
                uids[ds.get("uid")] = ds.get("type")
                m = re.fullmatch(r"https?://([\w-]+):(\d+)/?", str(ds.get("url", "")))
                if not m or m.group(1) not in services or m.group(2) != "9090":
                    bad(f"grafana datasource {fn}: url {ds.get('url')} is not a compose service on port 9090")
        paths = []
        for fn in sorted(os.listdir(os.path.join(pdir, "dashboards"))):
            for p in yaml.safe_load(open(os.path.join(pdir, "dashboards", fn))).get("providers", []):
                paths.append(p.get("options", {}).get("path"))
        if dash_target and os.path.dirname(dash_target) not in paths:
            bad(f"grafana dashboards provider paths {paths} do not hold {dash_target}")
        try:
            dash = json.load(open(os.path.join(root, "deploy/grafana/pskit-dashboard.json")))
        except Exception as e:
            bad(f"deploy/grafana/pskit-dashboard.json: {e}")
            dash = {}
        variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        def panels(ps):
            for p in ps:
                yield p
                yield from panels(p.get("panels", []))
        for p in panels(dash.get("panels", [])):
            ds = p.get("datasource")
            if not isinstance(ds, dict):
                continue
            uid = ds.get("uid", "")
            m = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
            if m:
                v = variables.get(m.group(1) or m.group(2))
                if not v or v.get("type") != "datasource" or v.get("query") not in uids.values():
                    bad(f"pskit-dashboard.json: panel '{p.get('title')}' uses {uid}, not a datasource variable of a provisioned type")
            elif uid not in uids:
                bad(f"pskit-dashboard.json: panel '{p.get('title')}' uses data source uid '{uid}', which is not provisioned")

for p in problems:
    print(f"check-compose: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  if command -v promtool >/dev/null; then
    promtool check config "$1/deploy/compose/prometheus.yml" >/dev/null ||
      { echo "check-compose: promtool check config deploy/compose/prometheus.yml failed" >&2; return 1; }
  fi
}

if [ "${1:-}" = "--self-test" ]; then
  # Each case plants one error in a copy of the tree and requires the
  # check to fail (scripts/deploy/self-test-lib.sh).
  # shellcheck source=scripts/deploy/self-test-lib.sh
  . "$root/scripts/deploy/self-test-lib.sh"
  cases=(
    "unscraped worker|sed -i 's/worker1:9400, //' deploy/compose/prometheus.yml"
    "misspelled shard in --shards|sed -i '0,/--shards=shard0:7000,shard1:7000/s//--shards=shard0:7000,shard2:7000/' deploy/compose/compose.yaml"
    "short grace period|sed -i 's/stop_grace_period: 60s/stop_grace_period: 1s/' deploy/compose/compose.yaml"
    "unknown binary|sed -i '0,/- ps-server/s//- ps-serverd/' deploy/compose/compose.yaml"
    "missing bind-mount source|sed -i 's|./prometheus.yml:|./prometheus.yaml:|' deploy/compose/compose.yaml"
    "wrong datasource url|sed -i 's|http://prometheus:9090|http://promethus:9090|' deploy/compose/grafana/provisioning/datasources/prometheus.yaml"
    "dashboard provider path|sed -i 's|path: /var/lib/grafana/dashboards|path: /var/lib/grafana/dashboard|' deploy/compose/grafana/provisioning/dashboards/pskit.yaml"
    "unprovisioned panel datasource|sed -i '0,/\"uid\": \"\${DS_PROMETHEUS}\"/s//\"uid\": \"prom\"/' deploy/grafana/pskit-dashboard.json"
    "grafana without profile|sed -i '/profiles: \[grafana\]/d' deploy/compose/compose.yaml"
  )
  pskit_self_test check-compose "$root" check "${cases[@]}"
fi

check "${1:-$root}"
echo "check-compose: deploy/compose (services, volumes, Prometheus targets, Grafana provisioning) is consistent"
