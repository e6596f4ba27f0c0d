#!/usr/bin/env bash
# Install the packages for the single-node Slurm test cluster (Debian/Ubuntu, run as root).
# Idempotent: packages that are already installed are skipped; if all are, apt is not touched.
# Daemons are NOT started here (see start_cluster.sh); Docker-style images usually have a
# /usr/sbin/policy-rc.d that stops package scripts from starting services, which is what we want.
set -euo pipefail

PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

if [[ $(id -u) -ne 0 ]]; then
    echo "install_cluster.sh: must run as root (apt-get install)" >&2
    exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_cluster.sh: all packages already installed (${PKGS[*]})"
    exit 0
fi

echo "install_cluster.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only if they are missing or older than a day.
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]]; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
echo "install_cluster.sh: done"
