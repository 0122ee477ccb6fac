#!/bin/sh
# Run at boot on each node of the pair, before keepalived:
#   vip-local.sh FLOATING_IP INTERFACE        e.g. vip-local.sh 192.0.2.100 eth0
#
# Keeps the floating IP local on every node (a /32 on lo) while only the
# VRRP master answers ARP for it (it alone has it on INTERFACE). A node that
# hands the address over therefore keeps answering whatever still reaches it
# (requests sent before clients saw the new master's gratuitous ARP, and
# responses already in flight); without this, its kernel drops those the
# moment keepalived removes the address. See deploy/README.md.
#   arp_ignore=1:   answer ARP only for addresses on the asking interface
#   arp_announce=2: never use the floating IP as the source of own ARP requests
set -eu
[ $# -eq 2 ] || { echo "usage: $0 FLOATING_IP INTERFACE" >&2; exit 2; }
vip=$1 dev=$2
for d in all "$dev"; do
	echo 1 >"/proc/sys/net/ipv4/conf/$d/arp_ignore"
	echo 2 >"/proc/sys/net/ipv4/conf/$d/arp_announce"
done
ip addr replace "$vip/32" dev lo
