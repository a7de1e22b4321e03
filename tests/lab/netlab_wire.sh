# Sourced by tests/lab/netlab: the addresses and routes of each topology. Each
# function uses cmd_up's locals (C B D S, M W with --middle, RB RD with --one-arm)
# and netlab's address constants.
# shellcheck shell=bash disable=SC2154  # the locals and constants are netlab's

# In path (the default, and --middle): the boxes route between the LANs and the WAN.
# Uses cmd_up's locals C B D S M W.
wire_in_path() {
  # Addresses and routes.
  ip -n "$C" addr add "$CLIENT_IP/24" dev eth0
  ip -n "$B" addr add "$BRANCH_LAN_IP/24" dev lan0
  ip -n "$W" addr add "$BRANCH_WAN_IP/$WAN_PREFIXLEN" dev wan0
  ip -n "$D" addr add "$DC_WAN_IP/$WAN_PREFIXLEN" dev wan0
  ip -n "$D" addr add "$DC_LAN_IP/24" dev lan0
  ip -n "$S" addr add "$SERVER_IP/24" dev eth0
  ip -n "$C" link set eth0 up
  ip -n "$B" link set lan0 up
  ip -n "$W" link set wan0 up
  ip -n "$D" link set wan0 up
  ip -n "$D" link set lan0 up
  ip -n "$S" link set eth0 up
  if [[ -n $M ]]; then
    ip -n "$B" addr add "$BRANCH_MID_IP/$MID_PREFIXLEN" dev mid0
    ip -n "$M" addr add "$MID_LAN_IP/$MID_PREFIXLEN" dev lan0
    ip -n "$B" link set mid0 up
    ip -n "$M" link set lan0 up
    sysctls "$B" net.ipv4.conf.lan0.rp_filter=0 net.ipv4.conf.mid0.rp_filter=0
    sysctls "$M" net.ipv4.conf.lan0.rp_filter=0 net.ipv4.conf.wan0.rp_filter=0
  else
    sysctls "$B" net.ipv4.conf.lan0.rp_filter=0 net.ipv4.conf.wan0.rp_filter=0
  fi
  sysctls "$D" net.ipv4.conf.lan0.rp_filter=0 net.ipv4.conf.wan0.rp_filter=0
  ip -n "$C" route add default via "$BRANCH_LAN_IP"
  ip -n "$S" route add default via "$DC_LAN_IP"
  if [[ -n $M ]]; then
    ip -n "$B" route add "$LAN_B_NET" via "$MID_LAN_IP" dev mid0
    ip -n "$B" route add "$WAN_NET" via "$MID_LAN_IP" dev mid0
    ip -n "$M" route add "$LAN_A_NET" via "$BRANCH_MID_IP" dev lan0
    ip -n "$M" route add "$LAN_B_NET" via "$DC_WAN_IP" dev wan0
    ip -n "$D" route add "$LAN_A_NET" via "$BRANCH_WAN_IP" dev wan0
    ip -n "$D" route add "$MID_NET" via "$BRANCH_WAN_IP" dev wan0
  else
    ip -n "$B" route add "$LAN_B_NET" via "$DC_WAN_IP" dev wan0
    ip -n "$D" route add "$LAN_A_NET" via "$BRANCH_WAN_IP" dev wan0
  fi
}

# --ipv6 (in path, and with --middle): the IPv6 addresses and routes, beside the
# IPv4 ones wire_in_path made, on the same links and with the same next hops.
# Addresses `nodad`: usable at once, no duplicate detection to wait for. Uses
# cmd_up's locals C B D S M W.
wire_ipv6() {
  ip -n "$C" addr add "$CLIENT_IP6/64" dev eth0 nodad
  ip -n "$B" addr add "$BRANCH_LAN_IP6/64" dev lan0 nodad
  ip -n "$W" addr add "$BRANCH_WAN_IP6/64" dev wan0 nodad
  ip -n "$D" addr add "$DC_WAN_IP6/64" dev wan0 nodad
  ip -n "$D" addr add "$DC_LAN_IP6/64" dev lan0 nodad
  ip -n "$S" addr add "$SERVER_IP6/64" dev eth0 nodad
  ip -n "$C" -6 route add default via "$BRANCH_LAN_IP6"
  ip -n "$S" -6 route add default via "$DC_LAN_IP6"
  if [[ -n $M ]]; then
    ip -n "$B" addr add "$BRANCH_MID_IP6/64" dev mid0 nodad
    ip -n "$M" addr add "$MID_LAN_IP6/64" dev lan0 nodad
    ip -n "$B" -6 route add "$LAN_B_NET6" via "$MID_LAN_IP6" dev mid0
    ip -n "$B" -6 route add "$WAN_NET6" via "$MID_LAN_IP6" dev mid0
    ip -n "$M" -6 route add "$LAN_A_NET6" via "$BRANCH_MID_IP6" dev lan0
    ip -n "$M" -6 route add "$LAN_B_NET6" via "$DC_WAN_IP6" dev wan0
    ip -n "$D" -6 route add "$LAN_A_NET6" via "$BRANCH_WAN_IP6" dev wan0
    ip -n "$D" -6 route add "$MID_NET6" via "$BRANCH_WAN_IP6" dev wan0
  else
    ip -n "$B" -6 route add "$LAN_B_NET6" via "$DC_WAN_IP6" dev wan0
    ip -n "$D" -6 route add "$LAN_A_NET6" via "$BRANCH_WAN_IP6" dev wan0
  fi
}

# --one-arm: the routers route between the LANs and the WAN and send TCP to their
# box (table 200); each box has one interface and a default route back to its router.
# Uses cmd_up's locals C B D S RB RD.
wire_one_arm() {
  ip -n "$C" addr add "$CLIENT_IP/24" dev eth0
  ip -n "$RB" addr add "$BRANCH_LAN_IP/24" dev lan0
  ip -n "$RB" addr add "$BRANCH_WAN_IP/$WAN_PREFIXLEN" dev wan0
  ip -n "$RB" addr add "$BRANCH_ROUTER_BOX_IP/$BOX_PREFIXLEN" dev box0
  ip -n "$B" addr add "$BRANCH_BOX_IP/$BOX_PREFIXLEN" dev eth0
  ip -n "$RD" addr add "$DC_WAN_IP/$WAN_PREFIXLEN" dev wan0
  ip -n "$RD" addr add "$DC_LAN_IP/24" dev lan0
  ip -n "$RD" addr add "$DC_ROUTER_BOX_IP/$BOX_PREFIXLEN" dev box0
  ip -n "$D" addr add "$DC_BOX_IP/$BOX_PREFIXLEN" dev eth0
  ip -n "$S" addr add "$SERVER_IP/24" dev eth0
  local n i
  for n in "$C" "$B" "$D" "$S"; do ip -n "$n" link set eth0 up; done
  for n in "$RB" "$RD"; do
    for i in lan0 wan0 box0; do ip -n "$n" link set "$i" up; done
    sysctls "$n" net.ipv4.conf.lan0.rp_filter=0 net.ipv4.conf.wan0.rp_filter=0 net.ipv4.conf.box0.rp_filter=0
  done
  for n in "$B" "$D"; do
    sysctls "$n" net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.all.send_redirects=0 \
      net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
  done
  ip -n "$C" route add default via "$BRANCH_LAN_IP"
  ip -n "$S" route add default via "$DC_LAN_IP"
  ip -n "$B" route add default via "$BRANCH_ROUTER_BOX_IP"
  ip -n "$D" route add default via "$DC_ROUTER_BOX_IP"
  ip -n "$RB" route add "$LAN_B_NET" via "$DC_WAN_IP" dev wan0
  ip -n "$RB" route add "$DC_BOX_NET" via "$DC_WAN_IP" dev wan0
  ip -n "$RD" route add "$LAN_A_NET" via "$BRANCH_WAN_IP" dev wan0
  ip -n "$RD" route add "$BRANCH_BOX_NET" via "$BRANCH_WAN_IP" dev wan0
  # The policies (only from the LAN, resp. the WAN and the servers: what the box
  # sends back arrives on box0 and takes the main table, or it would loop).
  ip -n "$RB" route add default via "$BRANCH_BOX_IP" dev box0 table "$POLICY_TABLE"
  ip -n "$RB" rule add iif lan0 ipproto tcp lookup "$POLICY_TABLE"
  ip -n "$RB" rule add iif wan0 ipproto tcp to "$LAN_A_NET" lookup "$POLICY_TABLE"
  ip -n "$RD" route add default via "$DC_BOX_IP" dev box0 table "$POLICY_TABLE"
  ip -n "$RD" rule add iif wan0 ipproto tcp lookup "$POLICY_TABLE"
  ip -n "$RD" rule add iif lan0 ipproto tcp to "$LAN_A_NET" lookup "$POLICY_TABLE"
}

# --one-arm --ipv6: the IPv6 addresses and routes beside the IPv4 ones wire_one_arm
# made, the same policies for IPv6 TCP. Addresses `nodad`, as wire_ipv6's.
wire_one_arm_ipv6() {
  ip -n "$C" addr add "$CLIENT_IP6/64" dev eth0 nodad
  ip -n "$RB" addr add "$BRANCH_LAN_IP6/64" dev lan0 nodad
  ip -n "$RB" addr add "$BRANCH_WAN_IP6/64" dev wan0 nodad
  ip -n "$RB" addr add "$BRANCH_ROUTER_BOX_IP6/64" dev box0 nodad
  ip -n "$B" addr add "$BRANCH_BOX_IP6/64" dev eth0 nodad
  ip -n "$RD" addr add "$DC_WAN_IP6/64" dev wan0 nodad
  ip -n "$RD" addr add "$DC_LAN_IP6/64" dev lan0 nodad
  ip -n "$RD" addr add "$DC_ROUTER_BOX_IP6/64" dev box0 nodad
  ip -n "$D" addr add "$DC_BOX_IP6/64" dev eth0 nodad
  ip -n "$S" addr add "$SERVER_IP6/64" dev eth0 nodad
  ip -n "$C" -6 route add default via "$BRANCH_LAN_IP6"
  ip -n "$S" -6 route add default via "$DC_LAN_IP6"
  ip -n "$B" -6 route add default via "$BRANCH_ROUTER_BOX_IP6"
  ip -n "$D" -6 route add default via "$DC_ROUTER_BOX_IP6"
  ip -n "$RB" -6 route add "$LAN_B_NET6" via "$DC_WAN_IP6" dev wan0
  ip -n "$RB" -6 route add "$DC_BOX_NET6" via "$DC_WAN_IP6" dev wan0
  ip -n "$RD" -6 route add "$LAN_A_NET6" via "$BRANCH_WAN_IP6" dev wan0
  ip -n "$RD" -6 route add "$BRANCH_BOX_NET6" via "$BRANCH_WAN_IP6" dev wan0
  ip -n "$RB" -6 route add default via "$BRANCH_BOX_IP6" dev box0 table "$POLICY_TABLE"
  ip -n "$RB" -6 rule add iif lan0 ipproto tcp lookup "$POLICY_TABLE"
  ip -n "$RB" -6 rule add iif wan0 ipproto tcp to "$LAN_A_NET6" lookup "$POLICY_TABLE"
  ip -n "$RD" -6 route add default via "$DC_BOX_IP6" dev box0 table "$POLICY_TABLE"
  ip -n "$RD" -6 rule add iif wan0 ipproto tcp lookup "$POLICY_TABLE"
  ip -n "$RD" -6 rule add iif lan0 ipproto tcp to "$LAN_A_NET6" lookup "$POLICY_TABLE"
}
