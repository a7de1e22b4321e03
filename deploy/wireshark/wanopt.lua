-- Wireshark/tshark dissector for the wanopt inner channel (protocol v1,
-- wanopt/docs/inner-channel.md): frames, the hello and hello-ack, DRE frame flags,
-- NACK and REPAIR; and for the auto-discovery TCP option 0x21 (33) on SYNs and
-- SYN-ACKs (same document, "Auto-discovery: TCP option 0x21"). Load it with
--   tshark -X lua_script:deploy/wireshark/wanopt.lua -d tcp.port==7800,wanopt -r capture.pcapng
-- or copy it to ~/.local/lib/wireshark/plugins/. Port 7800 is registered by default;
-- the option is decoded wherever it appears (fields wanopt.disc.*; filter ours with
-- wanopt.disc.version, other users of kind 33 with wanopt.disc.not_ours). Needs the
-- "tcp.option" dissector table (Wireshark 4.0 has it).

local wanopt = Proto("wanopt", "wanopt inner channel")

local frame_types = {
  [0x01] = "data", [0x02] = "half-close", [0x03] = "reset", [0x04] = "keepalive",
  [0x05] = "module", [0x06] = "dre", [0x07] = "nack", [0x08] = "repair",
  [0x10] = "hello", [0x11] = "hello-ack",
}
local reset_reasons = {
  [1] = "LAN reset", [2] = "LAN error", [3] = "protocol error", [4] = "timeout",
  [5] = "shutdown", [6] = "integrity",
}
local hello_status = {
  [0] = "ok", [1] = "refused", [2] = "unreachable", [3] = "timeout",
  [4] = "version unsupported", [5] = "rejected",
}

local f = {
  type = ProtoField.uint8("wanopt.type", "Type", base.HEX, frame_types),
  flags = ProtoField.uint8("wanopt.flags", "Flags", base.HEX),
  compressed = ProtoField.bool("wanopt.dre.compressed", "zstd-compressed", 8, nil, 0x01),
  lz_reset = ProtoField.bool("wanopt.dre.lz_reset", "zstd stream restarts", 8, nil, 0x02),
  lz_end = ProtoField.bool("wanopt.dre.lz_end", "zstd stream ends (idle)", 8, nil, 0x04),
  stream = ProtoField.uint16("wanopt.stream", "Stream (module slot)"),
  length = ProtoField.uint32("wanopt.length", "Payload length"),
  check = ProtoField.uint64("wanopt.check", "Check (XXH3-64)", base.HEX),
  payload = ProtoField.bytes("wanopt.payload", "Payload"),
  reason = ProtoField.uint8("wanopt.reset_reason", "Reset reason", base.DEC, reset_reasons),
  output_check = ProtoField.uint64("wanopt.dre.output_check", "Decoded bytes check (XXH3-64)", base.HEX),
  fingerprint = ProtoField.bytes("wanopt.fingerprint", "Fingerprint"),
  magic = ProtoField.string("wanopt.hello.magic", "Magic"),
  version = ProtoField.uint8("wanopt.hello.version", "Version"),
  policy = ProtoField.string("wanopt.hello.policy", "Offered policy"),
  negotiated = ProtoField.string("wanopt.hello.negotiated", "Negotiated policy"),
  applied = ProtoField.string("wanopt.hello.applied", "Applied policy"),
  status = ProtoField.uint8("wanopt.hello.status", "Status", base.DEC, hello_status),
  device = ProtoField.ether("wanopt.hello.device_id", "Device id"),
  dst_ip = ProtoField.ipv4("wanopt.hello.destination", "Destination"),
  dst_ip6 = ProtoField.ipv6("wanopt.hello.destination6", "Destination"),
  dst_port = ProtoField.uint16("wanopt.hello.destination_port", "Destination port"),
  src_ip = ProtoField.ipv4("wanopt.hello.source", "Source"),
  src_ip6 = ProtoField.ipv6("wanopt.hello.source6", "Source"),
  src_port = ProtoField.uint16("wanopt.hello.source_port", "Source port"),
  module = ProtoField.string("wanopt.hello.module", "Module"),
  accepted = ProtoField.uint32("wanopt.hello.accepted_modules", "Accepted module slots", base.HEX),
  seed = ProtoField.bytes("wanopt.hello.dre_seed", "DRE fingerprint seed"),
  instance = ProtoField.uint64("wanopt.hello.store_instance", "Chunk store instance", base.HEX),
  acceptor_ip = ProtoField.ipv4("wanopt.hello.acceptor", "Acceptor box address"),
  acceptor_ip6 = ProtoField.ipv6("wanopt.hello.acceptor6", "Acceptor box address"),
  acceptor_port = ProtoField.uint16("wanopt.hello.acceptor_port", "Acceptor listen port"),
  opener_ip = ProtoField.ipv4("wanopt.hello.opener", "Opener box address"),
  opener_ip6 = ProtoField.ipv6("wanopt.hello.opener6", "Opener box address"),
  opener_port = ProtoField.uint16("wanopt.hello.opener_port", "Opener port (0)"),
}
wanopt.fields = {}
for _, field in pairs(f) do table.insert(wanopt.fields, field) end

local malformed = ProtoExpert.new("wanopt.malformed", "Malformed wanopt frame", expert.group.MALFORMED, expert.severity.ERROR)
wanopt.experts = { malformed }

-- family (1), reserved (1), port (2), address (4 or 16); family 0: none.
local function endpoint(tvb, at, tree, ip4, ip6, port)
  local family = tvb(at, 1):uint()
  tree:add(port, tvb(at + 2, 2))
  if family == 4 then tree:add(ip4, tvb(at + 4, 4)); return at + 8 end
  if family == 6 then tree:add(ip6, tvb(at + 4, 16)); return at + 20 end
  return at + 4
end

local function hello(tvb, tree)
  tree:add(f.magic, tvb(0, 4))
  tree:add(f.version, tvb(4, 1))
  tree:add(f.policy, tvb(5, 1))
  tree:add(f.device, tvb(6, 6))
  local at = endpoint(tvb, 12, tree, f.dst_ip, f.dst_ip6, f.dst_port)
  at = endpoint(tvb, at, tree, f.src_ip, f.src_ip6, f.src_port)
  local modules = tvb(at, 1):uint(); at = at + 1
  for _ = 1, modules do
    local n = tvb(at, 1):uint()
    tree:add(f.module, tvb(at + 1, n))
    at = at + 1 + n
  end
  if tvb:len() > at then
    local dre = tvb(at, 1):uint(); at = at + 1
    if dre == 1 then
      tree:add(f.seed, tvb(at, 32))
      tree:add(f.instance, tvb(at + 32, 8))
      at = at + 40
    end
  end
  -- The branch box's own address (optional): its probe may come from the client's.
  if tvb:len() >= at + 8 then endpoint(tvb, at, tree, f.opener_ip, f.opener_ip6, f.opener_port) end
  return "hello, offers " .. tvb(5, 1):string()
end

local function hello_ack(tvb, tree)
  tree:add(f.magic, tvb(0, 4))
  tree:add(f.version, tvb(4, 1))
  tree:add(f.status, tvb(5, 1))
  tree:add(f.policy, tvb(6, 1))
  tree:add(f.negotiated, tvb(7, 1))
  tree:add(f.applied, tvb(8, 1))
  tree:add(f.device, tvb(10, 6))
  tree:add(f.accepted, tvb(16, 4))
  if tvb:len() >= 28 then tree:add(f.instance, tvb(20, 8)) end
  if tvb:len() >= 32 then endpoint(tvb, 28, tree, f.acceptor_ip, f.acceptor_ip6, f.acceptor_port) end
  return "hello-ack " .. (hello_status[tvb(5, 1):uint()] or "?") .. ", applies " .. tvb(8, 1):string()
end

function wanopt.dissector(tvb, pinfo, tree)
  local offset = 0
  local summary = {}
  while offset < tvb:len() do
    local left = tvb:len() - offset
    if left < 16 then
      pinfo.desegment_offset = offset
      pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
      break
    end
    local length = tvb(offset + 4, 4):uint()
    if left < 16 + length then
      pinfo.desegment_offset = offset
      pinfo.desegment_len = 16 + length - left
      break
    end
    local kind = tvb(offset, 1):uint()
    local name = frame_types[kind] or string.format("unknown 0x%02x", kind)
    local sub = tree:add(wanopt, tvb(offset, 16 + length), "wanopt " .. name)
    sub:add(f.type, tvb(offset, 1))
    local flags = sub:add(f.flags, tvb(offset + 1, 1))
    if kind == 0x06 then
      flags:add(f.compressed, tvb(offset + 1, 1))
      flags:add(f.lz_reset, tvb(offset + 1, 1))
      flags:add(f.lz_end, tvb(offset + 1, 1))
    end
    sub:add(f.stream, tvb(offset + 2, 2))
    sub:add(f.length, tvb(offset + 4, 4))
    sub:add(f.check, tvb(offset + 8, 8))
    if frame_types[kind] == nil or length > 131056 then sub:add_proto_expert_info(malformed) end
    if length > 0 then
      local body = tvb(offset + 16, length):tvb()
      local ok, text = pcall(function()
        if kind == 0x10 then return hello(body, sub) end
        if kind == 0x11 then return hello_ack(body, sub) end
        if kind == 0x03 then sub:add(f.reason, body(0, 1)); return "reset (" .. (reset_reasons[body(0, 1):uint()] or "?") .. ")" end
        if kind == 0x06 then sub:add(f.output_check, body(0, 8)); sub:add(f.payload, body(8)); return nil end
        if kind == 0x07 then
          for i = 0, length - 16, 16 do sub:add(f.fingerprint, body(i, 16)) end
          return "nack, " .. math.floor(length / 16) .. " chunk(s)"
        end
        if kind == 0x08 then sub:add(f.fingerprint, body(0, 16)); sub:add(f.payload, body(16)); return nil end
        if kind == 0x04 and length == 1 and body(0, 1):uint() == 1 then
          sub:add(f.payload, body(0, 1))
          return "keepalive (finished: decoded up to the receiver's half-close)"
        end
        sub:add(f.payload, body())
        return nil
      end)
      if not ok then sub:add_proto_expert_info(malformed) end
      if ok and text then name = text end
    end
    table.insert(summary, name)
    offset = offset + 16 + length
  end
  if #summary > 0 then
    pinfo.cols.protocol = "WANOPT"
    pinfo.cols.info = table.concat(summary, ", ")
  end
  return offset
end

DissectorTable.get("tcp.port"):add(7800, wanopt)

-- ---------------------------------------------------------------- TCP option 0x21
-- Registered in the TCP dissector's "tcp.option" table for kind 33, so the TCP
-- dissector hands us each such option (kind and length bytes included) where it
-- would otherwise show "Unknown (0x21)". Another optimizer (OpenNOP) uses kind 33
-- too: an option whose magic byte is not 0x57 ('W') is shown as "not wanopt".

local disc = Proto("wanopt.disc", "wanopt auto-discovery (TCP option 0x21)")

local policies = { [0] = "T", [1] = "L", [2] = "D", [3] = "F" }
local policy_names = { [0] = "T (TCP only)", [1] = "L (LZ)", [2] = "D (DRE)", [3] = "F (DRE+LZ)" }
local FLAG_ANSWER, FLAG_CLIENT_V4, FLAG_PLAINTEXT, FLAG_RELAYED, FLAG_CLIENT_V6 = 0x04, 0x08, 0x10, 0x20, 0x40

local d = {
  kind = ProtoField.uint8("wanopt.disc.kind", "Kind", base.DEC),
  length = ProtoField.uint8("wanopt.disc.length", "Length", base.DEC),
  magic = ProtoField.uint8("wanopt.disc.magic", "Magic", base.HEX),
  version = ProtoField.uint8("wanopt.disc.version", "Version", base.DEC),
  flags = ProtoField.uint8("wanopt.disc.flags", "Flags", base.HEX),
  policy_bits = ProtoField.uint8("wanopt.disc.policy_bits", "Policy offered", base.DEC, policy_names, 0x03),
  answer = ProtoField.bool("wanopt.disc.answer", "Answer", 8, nil, FLAG_ANSWER),
  client_v4 = ProtoField.bool("wanopt.disc.client_v4", "Client IPv4 address follows", 8, nil, FLAG_CLIENT_V4),
  plaintext = ProtoField.bool("wanopt.disc.plaintext", "Plaintext inner channel", 8, nil, FLAG_PLAINTEXT),
  relayed = ProtoField.bool("wanopt.disc.relayed", "Relayed by a middle box", 8, nil, FLAG_RELAYED),
  client_v6 = ProtoField.bool("wanopt.disc.client_v6", "Client IPv6 address follows", 8, nil, FLAG_CLIENT_V6),
  reserved = ProtoField.uint8("wanopt.disc.reserved", "Reserved", base.HEX, nil, 0x80),
  policy = ProtoField.string("wanopt.disc.policy", "Policy"),
  device = ProtoField.ether("wanopt.disc.device_id", "Device id"),
  client = ProtoField.ipv4("wanopt.disc.client", "Client"),
  client6 = ProtoField.ipv6("wanopt.disc.client6", "Client (IPv6)"),
  foreign = ProtoField.bytes("wanopt.disc.not_ours", "Not wanopt (another user of kind 33)"),
}
disc.fields = {}
for _, field in pairs(d) do table.insert(disc.fields, field) end

local disc_malformed = ProtoExpert.new("wanopt.disc.malformed", "Malformed wanopt TCP option",
                                       expert.group.MALFORMED, expert.severity.ERROR)
local disc_version = ProtoExpert.new("wanopt.disc.unknown_version", "wanopt TCP option of an unknown version (not ours)",
                                     expert.group.UNDECODED, expert.severity.NOTE)
local disc_context = ProtoExpert.new("wanopt.disc.unexpected", "wanopt TCP option flags unexpected on this segment",
                                     expert.group.PROTOCOL, expert.severity.WARN)
disc.experts = { disc_malformed, disc_version, disc_context }

local tcp_syn = Field.new("tcp.flags.syn")
local tcp_ack = Field.new("tcp.flags.ack")

local function last(field)  -- the innermost TCP header's value (ICMP errors quote one)
  local all = { field() }
  local v = all[#all]
  return v ~= nil and v.value
end

function disc.dissector(tvb, pinfo, tree)
  local len = tvb:len()
  if len < 3 or tvb(2, 1):uint() ~= 0x57 then
    local item = tree:add(disc, tvb(), "TCP option 0x21: not wanopt")
    item:add(d.kind, tvb(0, 1))
    if len >= 2 then item:add(d.length, tvb(1, 1)) end
    if len >= 3 then
      item:add(d.magic, tvb(2, 1))
      item:add(d.foreign, tvb(2))
      item:append_text(string.format(" (magic 0x%02x)", tvb(2, 1):uint()))
    end
    pinfo.cols.info:append(" [option 33: not wanopt]")
    return len
  end
  local item = tree:add(disc, tvb())
  item:add(d.kind, tvb(0, 1))
  item:add(d.length, tvb(1, 1))
  item:add(d.magic, tvb(2, 1)):append_text(" ('W')")
  if len < 5 then
    item:add_proto_expert_info(disc_malformed, "wanopt TCP option shorter than 11 bytes")
    item:set_text("wanopt auto-discovery: malformed")
    return len
  end
  local version = tvb(3, 1):uint()
  item:add(d.version, tvb(3, 1))
  if version ~= 1 then
    item:add_proto_expert_info(disc_version)
    item:set_text("wanopt auto-discovery: version " .. version .. " (unknown, ignored)")
    pinfo.cols.info:append(" [wanopt option v" .. version .. "?]")
    return len
  end
  local flags = tvb(4, 1):uint()
  local ftree = item:add(d.flags, tvb(4, 1))
  ftree:add(d.policy_bits, tvb(4, 1))
  ftree:add(d.answer, tvb(4, 1))
  ftree:add(d.client_v4, tvb(4, 1))
  ftree:add(d.plaintext, tvb(4, 1))
  ftree:add(d.relayed, tvb(4, 1))
  ftree:add(d.client_v6, tvb(4, 1))
  ftree:add(d.reserved, tvb(4, 1))
  local policy = policies[bit.band(flags, 0x03)]
  item:add(d.policy, tvb(4, 1), policy)
  local v4, v6 = bit.band(flags, FLAG_CLIENT_V4) ~= 0, bit.band(flags, FLAG_CLIENT_V6) ~= 0
  local has_client = v4 or v6
  local want = v4 and 15 or v6 and 27 or 11
  local malformed = len ~= want or (v4 and v6)
  if malformed then
    item:add_proto_expert_info(disc_malformed, string.format("length %d, expected %d%s", len, want,
                               (v4 and v6) and " (CLIENT_V4 and CLIENT_V6 both set)" or
                               v4 and " (CLIENT_V4 set)" or v6 and " (CLIENT_V6 set)" or ""))
  end
  local id = "?"
  if len >= 11 then
    item:add(d.device, tvb(5, 6))
    id = tvb(5, 6):bytes():tohex(true, ":")
  end
  local client
  if v4 and not v6 and len >= 15 then
    item:add(d.client, tvb(11, 4))
    client = tostring(tvb(11, 4):ipv4())
  elseif v6 and not v4 and len >= 27 then
    item:add(d.client6, tvb(11, 16))
    client = tostring(tvb(11, 16):ipv6())
  end

  local answer = bit.band(flags, FLAG_ANSWER) ~= 0
  local words = { "wanopt", answer and "answer" or "offer", policy, "id", id }
  if client then table.insert(words, "client " .. client) end
  if bit.band(flags, FLAG_PLAINTEXT) ~= 0 then table.insert(words, "plaintext") end
  if bit.band(flags, FLAG_RELAYED) ~= 0 then table.insert(words, "relayed") end
  if malformed then table.insert(words, "malformed") end
  local summary = table.concat(words, " ")
  item:set_text("wanopt auto-discovery: " .. summary:sub(8))
  pinfo.cols.info:append(" [" .. summary .. "]")

  -- What the flags mean depends on the segment: offers ride on SYNs, answers on SYN-ACKs.
  local syn, ack = last(tcp_syn), last(tcp_ack)
  if syn == false then
    item:add_proto_expert_info(disc_context, "wanopt option on a segment without SYN")
  elseif syn and ack and (not answer or has_client) then
    item:add_proto_expert_info(disc_context, "a SYN-ACK carries answers (ANSWER set, no client address)")
  elseif syn and not ack and (answer or bit.band(flags, FLAG_RELAYED) ~= 0) then
    item:add_proto_expert_info(disc_context, "ANSWER/RELAYED on a SYN")
  end
  return len
end

DissectorTable.get("tcp.option"):add(0x21, disc)
