-- Wireshark/tshark dissector for the wanopt inner channel (protocol v1,
-- wanopt/docs/inner-channel.md): frames, the hello and hello-ack, DRE frame flags,
-- NACK and REPAIR. Load it with
--   tshark -X lua_script:deploy/wireshark/wanopt.lua -d tcp.port==7800,wanopt -r capture.pcapng
-- or copy it to ~/.local/lib/wireshark/plugins/. Port 7800 is registered by default.

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
  if tvb:len() > at and tvb(at, 1):uint() == 1 then
    tree:add(f.seed, tvb(at + 1, 32))
    tree:add(f.instance, tvb(at + 33, 8))
  end
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
        sub:add(f.payload, body)
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
