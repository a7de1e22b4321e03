# Sourced by tests/lab/netlab: print_topology, the drawing of a lab that is up, from
# its $STATE/config (what `up` was given) and netlab's address constants.
# shellcheck shell=bash disable=SC2154  # the constants are netlab's

print_topology() {
  local delay rate loss pid start middle one_arm intercept ipv6
  delay=$(config_value delay_ms)
  rate=$(config_value rate_mbit)
  loss=$(config_value loss_pct)
  middle=$(config_value middle)
  one_arm=$(config_value one_arm)
  intercept=$(config_value intercept)
  ipv6=$(config_value ipv6)
  read -r pid start <"$STATE/delayline.pid" || true
  echo "  WAN: ${delay} ms one way ($(awk -v d="$delay" 'BEGIN { print 2 * d }') ms RTT), rate ${rate:-unlimited}${rate:+ Mbit/s}, loss ${loss:-0}% each way; delay line PID $pid"
  if [[ $intercept == yes* ]]; then
    echo "  interception rules in every box (deploy/intercept install${intercept#yes}$([[ $ipv6 == 1 ]] || echo " --ipv4-only"))"
  fi
  [[ $ipv6 == 1 ]] && echo "  ipv6=1: dual-stack (all IPv6 prefixes /64)"
  if [[ $ipv6 == 1 && $one_arm == 1 ]]; then
    cat <<EOF
  $(ns client)  eth0 $CLIENT_IP/24  $CLIENT_IP6
      │ veth
  $(ns branch-router)  lan0 $BRANCH_LAN_IP/24 $BRANCH_LAN_IP6   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN $BRANCH_WAN_IP6 (TUN)   box0 $BRANCH_ROUTER_BOX_IP/$BOX_PREFIXLEN $BRANCH_ROUTER_BOX_IP6 ── $(ns branch) eth0 $BRANCH_BOX_IP/$BOX_PREFIXLEN $BRANCH_BOX_IP6
      ║ WAN: wanopt_delayline          (TCP from lan0 policy-routed to the box, table $POLICY_TABLE, both families)
  $(ns dc-router)  wan0 $DC_WAN_IP/$WAN_PREFIXLEN $DC_WAN_IP6 (TUN)   lan0 $DC_LAN_IP/24 $DC_LAN_IP6   box0 $DC_ROUTER_BOX_IP/$BOX_PREFIXLEN $DC_ROUTER_BOX_IP6 ── $(ns dc) eth0 $DC_BOX_IP/$BOX_PREFIXLEN $DC_BOX_IP6
      │ veth                           (TCP from wan0, and from lan0 to $LAN_A_NET / $LAN_A_NET6, policy-routed to the box)
  $(ns server)  eth0 $SERVER_IP/24  $SERVER_IP6
EOF
    return 0
  fi
  if [[ $ipv6 == 1 && $middle == 1 ]]; then
    cat <<EOF
  $(ns client)  eth0 $CLIENT_IP/24  $CLIENT_IP6
      │ veth
  $(ns branch)  lan0 $BRANCH_LAN_IP/24  $BRANCH_LAN_IP6   mid0 $BRANCH_MID_IP/$MID_PREFIXLEN  $BRANCH_MID_IP6
      │ veth
  $(ns mid)     lan0 $MID_LAN_IP/$MID_PREFIXLEN  $MID_LAN_IP6   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN  $BRANCH_WAN_IP6 (TUN)
      ║ WAN: wanopt_delayline
  $(ns dc)      wan0 $DC_WAN_IP/$WAN_PREFIXLEN  $DC_WAN_IP6 (TUN)   lan0 $DC_LAN_IP/24  $DC_LAN_IP6
      │ veth
  $(ns server)  eth0 $SERVER_IP/24  $SERVER_IP6
EOF
    return 0
  fi
  if [[ $ipv6 == 1 ]]; then
    cat <<EOF
  $(ns client)  eth0 $CLIENT_IP/24  $CLIENT_IP6
      │ veth
  $(ns branch)  lan0 $BRANCH_LAN_IP/24  $BRANCH_LAN_IP6   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN  $BRANCH_WAN_IP6 (TUN)
      ║ WAN: wanopt_delayline
  $(ns dc)      wan0 $DC_WAN_IP/$WAN_PREFIXLEN  $DC_WAN_IP6 (TUN)   lan0 $DC_LAN_IP/24  $DC_LAN_IP6
      │ veth
  $(ns server)  eth0 $SERVER_IP/24  $SERVER_IP6
EOF
    return 0
  fi
  if [[ $one_arm == 1 ]]; then
    cat <<EOF
  $(ns client)  eth0 $CLIENT_IP/24
      │ veth
  $(ns branch-router)  lan0 $BRANCH_LAN_IP/24   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN (TUN)   box0 $BRANCH_ROUTER_BOX_IP/$BOX_PREFIXLEN ── $(ns branch) eth0 $BRANCH_BOX_IP/$BOX_PREFIXLEN
      ║ WAN: wanopt_delayline          (TCP from lan0 policy-routed to the box, table $POLICY_TABLE)
  $(ns dc-router)  wan0 $DC_WAN_IP/$WAN_PREFIXLEN (TUN)   lan0 $DC_LAN_IP/24   box0 $DC_ROUTER_BOX_IP/$BOX_PREFIXLEN ── $(ns dc) eth0 $DC_BOX_IP/$BOX_PREFIXLEN
      │ veth                           (TCP from wan0, and from lan0 to $LAN_A_NET, policy-routed to the box)
  $(ns server)  eth0 $SERVER_IP/24
EOF
    return 0
  fi
  echo "  $(ns client)  eth0 $CLIENT_IP/24"
  echo "      │ veth"
  if [[ $middle == 1 ]]; then
    echo "  $(ns branch)  lan0 $BRANCH_LAN_IP/24   mid0 $BRANCH_MID_IP/$MID_PREFIXLEN"
    echo "      │ veth"
    echo "  $(ns mid)     lan0 $MID_LAN_IP/$MID_PREFIXLEN   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN (TUN)"
  else
    echo "  $(ns branch)  lan0 $BRANCH_LAN_IP/24   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN (TUN)"
  fi
  cat <<EOF
      ║ WAN: wanopt_delayline
  $(ns dc)      wan0 $DC_WAN_IP/$WAN_PREFIXLEN (TUN)   lan0 $DC_LAN_IP/24
      │ veth
  $(ns server)  eth0 $SERVER_IP/24
EOF
}
