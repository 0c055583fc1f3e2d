#!/usr/bin/env bash
# Sets this machine up as a single-node SLURM cluster (munge, slurmctld and
# slurmd on one host) so deploy/slurm/pskit.sbatch can be run for real, as
# scripts/deploy/test-slurm.sh does. Idempotent: a second run changes nothing
# and returns once the node is idle. Run as root.
#
#   bash scripts/deploy/setup-slurm.sh
#
# Writes /etc/slurm/slurm.conf (marked as pskit's) and refuses to replace a
# slurm.conf it did not write unless PSKIT_SLURM_FORCE=1, which keeps the old
# one as slurm.conf.pskit-backup-DATE. The settings are the ones that work on
# these hosts (docs: ../../../shared/HOST-NOTES.md, "SLURM on one node").
# No systemd here: the daemons are started directly and checked with
# `scontrol ping` / `sinfo`.
set -euo pipefail

say() { echo "setup-slurm: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts the SLURM daemons"

conf_dir=/etc/slurm
conf="$conf_dir/slurm.conf"
marker="# pskit single-node cluster, written by scripts/deploy/setup-slurm.sh"

# 1. Packages. slurm-wlm brings slurmctld, slurmd and the client commands
#    (22.05 on Debian 12); munge is the authentication every SLURM message
#    carries. The package scripts try to start the services and fail without
#    systemd: harmless, the daemons are started below. install-deps.sh
#    installs those not yet installed, after apt-get update.
"$(dirname "$0")/../install-deps.sh" --packages slurm-wlm munge >/dev/null ||
  die "installing slurm-wlm and munge failed (apt-get's errors above)"

# 2. The munge key: munged refuses to start without one, and it must be
#    readable by the munge user only (0400, owned by munge). Every node of a
#    real cluster shares the same key; here there is one node.
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
  say "creating the munge key $key"
  install -d -o munge -g munge -m 0700 /etc/munge
  dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
fi
chown munge:munge "$key"
chmod 0400 "$key"

# 3. munged, as the munge user (it refuses to run as root). Its socket
#    directory /run/munge is made here because no init system makes it.
#    `munge -n | unmunge` proves a credential round-trips.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || die "munged does not answer; see /var/log/munge/munged.log"
fi

# 4. slurm.conf. The node line comes from `slurmd -C` (this host's short name,
#    its real CPUs, sockets, cores and memory), so slurmd registers with the
#    configuration slurmctld expects. The plugins are the ones that work
#    without cgroup v2 and systemd: proctrack/linuxproc finds a step's
#    processes by parentage, task/none binds nothing, no accounting. The
#    partition oversubscribes so several jobs (and test runs) can share the
#    two cores. SlurmUser is the user the daemons run as (whoever runs this
#    script, root): a mismatch makes every step fail with "Invalid job
#    credential".
node_line=$(slurmd -C | grep '^NodeName=') || die "'slurmd -C' printed no NodeName line"
node=$(hostname -s)
[[ "$node_line" == "NodeName=$node "* ]] || die "slurmd -C names another node than $node: $node_line"
user=$(id -un)
new_conf=$(cat <<EOF
$marker
# (rerun that script to rewrite it). Settings and why: shared/HOST-NOTES.md.
ClusterName=pskit
SlurmctldHost=$node
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that restarts comes back by itself instead of staying DOWN.
ReturnToService=2
# Finished jobs stay visible to 'scontrol show job' for 10 minutes (there is
# no accounting database for sacct).
MinJobAge=600
# Seconds between SIGTERM and SIGKILL when a step is cancelled: enough for a
# shard's final checkpoint.
KillWait=30
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node_line State=UNKNOWN
PartitionName=pskit Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
)
changed=0
if [ -e "$conf" ] && ! head -n 1 "$conf" | grep -qxF "$marker"; then
  if [ "${PSKIT_SLURM_FORCE:-0}" != 1 ]; then
    die "$conf exists and was not written by this script; move it away, or rerun with PSKIT_SLURM_FORCE=1 to replace it (the old one is kept as $conf.pskit-backup-DATE)"
  fi
  backup="$conf.pskit-backup-$(date +%Y%m%d-%H%M%S)"
  say "keeping the existing $conf as $backup"
  cp -p "$conf" "$backup"
fi
if [ ! -e "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
  say "writing $conf"
  install -d -m 0755 "$conf_dir"
  printf '%s\n' "$new_conf" >"$conf.tmp"
  mv "$conf.tmp" "$conf"
  changed=1
fi
install -d -m 0755 /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm

# 5. The daemons. A changed slurm.conf needs both restarted (a node's CPUs
#    or the plugins are not reloaded by 'scontrol reconfigure').
#    `scontrol shutdown` stops slurmctld and every slurmd.
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
slurmd_up() { [ -s /run/slurmd.pid ] && kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; }
if [ "$changed" = 1 ] && { ctld_up || slurmd_up; }; then
  say "slurm.conf changed: restarting the daemons"
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    ctld_up || slurmd_up || break
    sleep 0.2
  done
fi
if ! ctld_up; then
  say "starting slurmctld"
  /usr/sbin/slurmctld || die "slurmctld did not start; see /var/log/slurm/slurmctld.log"
  for _ in $(seq 100); do
    ctld_up && break
    sleep 0.2
  done
  ctld_up || die "slurmctld does not answer 'scontrol ping'; see /var/log/slurm/slurmctld.log"
fi
if ! slurmd_up; then
  say "starting slurmd"
  /usr/sbin/slurmd || die "slurmd did not start; see /var/log/slurm/slurmd.log"
fi

# 6. Wait until the node is usable. A node that was DOWN or DRAINED (a
#    slurmd killed earlier) is resumed: on this one-node cluster nobody else
#    decided that.
state=""
for _ in $(seq 150); do
  state=$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1)
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*)
      scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$state" in
  idle | mixed | allocated) say "node $node is $state; $(sinfo -h -o '%P %D %C' | head -n 1) (partition nodes CPUs A/I/O/T)" ;;
  *) die "node $node is '${state:-unknown}' after 30 s; see /var/log/slurm/slurmd.log and 'scontrol show node $node'" ;;
esac
