#!/bin/bash
# Two network namespaces joined by a veth pair, for the network fault tests (tests/test_fault_net.c).
#   netns.sh up NAME         creates NAME-a (10.251.N.1) and NAME-b (10.251.N.2); prints the two addresses
#   netns.sh down NAME       removes both namespaces (and the root blackhole route when no test is left)
#   netns.sh cut|heal NAME   link down / up (on the a side)
#   netns.sh blackhole NAME  silent drop of everything NAME-b receives (nftables), clear NAME removes it
#   netns.sh loss NAME PCT   random drop of PCT% of what NAME-b receives (nftables numgen random)
#   netns.sh reap            removes mcf<PID> namespaces left by test processes that no longer exist
#   netns.sh check           exit 0 when namespaces, veth and nftables can be used here
# Both ends of a test run inside the namespaces. The root namespace gets a blackhole route for
# 10.251.0.0/16 while a test runs, so that nothing there sends to a test address out of the machine.
set -uo pipefail
cmd=${1:-}; name=${2:-}
valid() { [[ $1 =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "netns.sh: NAME: 1-8 lowercase letters or digits" >&2; exit 2; }; }
n_of() { echo $(( $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 250 + 1 )); }
case $cmd in
check)
  [ "$(id -u)" = 0 ] || { echo "not root"; exit 1; }
  command -v ip >/dev/null || { echo "no ip (iproute2)"; exit 1; }
  t=mcfchk$$; t=${t:0:8}
  ip netns add "$t" 2>/dev/null || { echo "cannot create a network namespace"; exit 1; }
  ok=1
  ip -n "$t" link add vchk0 type veth peer name vchk1 2>/dev/null || { echo "no veth"; ok=0; }
  ip netns del "$t"
  [ $ok = 1 ] || exit 1
  command -v nft >/dev/null || { echo "nft missing (blackhole and loss cases will skip)"; exit 0; }
  exit 0;;
reap)
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mcf[0-9]+-[ab]$'); do
    pid=${ns#mcf}; pid=${pid%-*}
    [ -d /proc/$pid ] || ip netns del "$ns" 2>/dev/null
  done
  exit 0;;
esac
[ -n "$cmd" ] && [ -n "$name" ] || { sed -n '2,10p' "$0"; exit 2; }
valid "$name"
n=$(n_of "$name"); a=$name-a; b=$name-b
case $cmd in
up)
  set -e
  ip route replace blackhole 10.251.0.0/16 2>/dev/null || true
  ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true
  ip netns add "$a"; ip netns add "$b"
  ip link add "v$name-a" netns "$a" type veth peer name "v$name-b" netns "$b"
  ip -n "$a" addr add "10.251.$n.1/24" dev "v$name-a"; ip -n "$b" addr add "10.251.$n.2/24" dev "v$name-b"
  for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
  ip -n "$a" link set "v$name-a" up; ip -n "$b" link set "v$name-b" up
  echo "10.251.$n.1 10.251.$n.2";;
down)
  ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null
  ip netns list 2>/dev/null | grep -qE '^mcf[0-9]+-[ab]' || ip route del blackhole 10.251.0.0/16 2>/dev/null
  exit 0;;
cut) ip -n "$a" link set "v$name-a" down;;
heal) ip -n "$a" link set "v$name-a" up;;
blackhole|loss)
  ip netns exec "$b" nft delete table inet mcfault 2>/dev/null
  ip netns exec "$b" nft add table inet mcfault &&
  ip netns exec "$b" nft add chain inet mcfault in '{ type filter hook input priority 0; }' || exit 1
  if [ "$cmd" = blackhole ]; then
    ip netns exec "$b" nft add rule inet mcfault in iifname "v$name-b" drop
  else
    p=${3:?PERCENT}
    ip netns exec "$b" nft add rule inet mcfault in iifname "v$name-b" numgen random mod 100 "<" "$p" drop
  fi;;
clear) ip netns exec "$b" nft delete table inet mcfault 2>/dev/null; exit 0;;
*) sed -n '2,10p' "$0"; exit 2;;
esac
