#!/usr/bin/env bash
# Print a free IPv4 address of a lab network for a floating address: the highest host address of its subnet
# (Docker hands out container addresses from the low end), or the next one down that no container of the
# network uses.   lab/lab-vip.sh ci-lbp-greenflow-lab   ->   172.19.255.254
set -euo pipefail
network=${1:?usage: lab-vip.sh <docker network>}
subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$network")
used=$(docker network inspect -f '{{range .Containers}}{{.IPv4Address}} {{end}}' "$network")
python3 - "$subnet" "$used" <<'PY'
import ipaddress
import sys

subnets = [ipaddress.ip_network(s) for s in sys.argv[1].split() if ipaddress.ip_network(s).version == 4]
if not subnets:
    sys.exit("the network has no IPv4 subnet")
used = {ipaddress.ip_interface(a).ip for a in sys.argv[2].split()}
net = subnets[0]
candidate = net.broadcast_address - 1
while candidate in used or candidate == net.network_address + 1:
    candidate -= 1
    if candidate <= net.network_address + 1:
        sys.exit("no free address in %s" % net)
print(candidate)
PY
