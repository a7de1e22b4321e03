# Sourced by tests/lab/netlab: print_topology, the drawing of a lab that is up, from
# its $STATE/config (what `up` was given) and netlab's address constants.
# shellcheck shell=bash disable=SC2154  # the constants are netlab's

print_topology() {
  local delay rate loss pid middle one_arm intercept ipv6
  delay=$(config_value delay_ms)
  rate=$(config_value rate_mbit)
  loss=$(config_value loss_pct)
  middle=$(config_value middle)
  one_arm=$(config_value one_arm)
  intercept=$(config_value intercept)
  ipv6=$(config_value ipv6)
  read -r pid _ <"$STATE/delayline.pid" || true
  echo "  WAN: ${delay} ms one way ($(awk -v d="$delay" 'BEGIN { print 2 * d }') ms RTT), rate ${rate:-unlimited}${rate:+ Mbit/s}, loss ${loss:-0}% each way; delay line PID $pid"
  if [[ $intercept == yes* ]]; then
    echo "  interception rules in every box (deploy/intercept install${intercept#yes}$([[ $ipv6 == 1 ]] || echo " --ipv4-only"))"
  fi
  [[ $ipv6 == 1 ]] && echo "  ipv6=1: dual-stack (all IPv6 prefixes /64)"
  # v6 ADDRESS: "  ADDRESS" in a dual-stack lab, nothing otherwise.
  v6() { [[ $ipv6 == 1 ]] && printf '  %s' "$1"; }
  echo "  $(ns client)  eth0 $CLIENT_IP/24$(v6 "$CLIENT_IP6")"
  echo "      │ veth"
  if [[ $one_arm == 1 ]]; then
    local families="" to_clients=$LAN_A_NET
    [[ $ipv6 == 1 ]] && families=", both families" to_clients="$LAN_A_NET / $LAN_A_NET6"
    echo "  $(ns branch-router)  lan0 $BRANCH_LAN_IP/24$(v6 "$BRANCH_LAN_IP6")   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN$(v6 "$BRANCH_WAN_IP6") (TUN)   box0 $BRANCH_ROUTER_BOX_IP/$BOX_PREFIXLEN$(v6 "$BRANCH_ROUTER_BOX_IP6") ── $(ns branch) eth0 $BRANCH_BOX_IP/$BOX_PREFIXLEN$(v6 "$BRANCH_BOX_IP6")"
    echo "      ║ WAN: wanopt_delayline          (TCP from lan0 policy-routed to the box, table $POLICY_TABLE$families)"
    echo "  $(ns dc-router)  wan0 $DC_WAN_IP/$WAN_PREFIXLEN$(v6 "$DC_WAN_IP6") (TUN)   lan0 $DC_LAN_IP/24$(v6 "$DC_LAN_IP6")   box0 $DC_ROUTER_BOX_IP/$BOX_PREFIXLEN$(v6 "$DC_ROUTER_BOX_IP6") ── $(ns dc) eth0 $DC_BOX_IP/$BOX_PREFIXLEN$(v6 "$DC_BOX_IP6")"
    echo "      │ veth                           (TCP from wan0, and from lan0 to $to_clients, policy-routed to the box)"
  else
    if [[ $middle == 1 ]]; then
      echo "  $(ns branch)  lan0 $BRANCH_LAN_IP/24$(v6 "$BRANCH_LAN_IP6")   mid0 $BRANCH_MID_IP/$MID_PREFIXLEN$(v6 "$BRANCH_MID_IP6")"
      echo "      │ veth"
      echo "  $(ns mid)     lan0 $MID_LAN_IP/$MID_PREFIXLEN$(v6 "$MID_LAN_IP6")   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN$(v6 "$BRANCH_WAN_IP6") (TUN)"
    else
      echo "  $(ns branch)  lan0 $BRANCH_LAN_IP/24$(v6 "$BRANCH_LAN_IP6")   wan0 $BRANCH_WAN_IP/$WAN_PREFIXLEN$(v6 "$BRANCH_WAN_IP6") (TUN)"
    fi
    echo "      ║ WAN: wanopt_delayline"
    echo "  $(ns dc)      wan0 $DC_WAN_IP/$WAN_PREFIXLEN$(v6 "$DC_WAN_IP6") (TUN)   lan0 $DC_LAN_IP/24$(v6 "$DC_LAN_IP6")"
    echo "      │ veth"
  fi
  echo "  $(ns server)  eth0 $SERVER_IP/24$(v6 "$SERVER_IP6")"
}
