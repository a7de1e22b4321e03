#!/usr/bin/env python3
"""Writes hand-built DCE/RPC seeds for dcerpc_fuzz: what mapi.pcap lacks (big-endian
drep, responses in three fragments, several towers, full and null pointers, a bind
with three contexts and a privacy-level verifier). Standard library only.

    tests/fuzz/seeds/make_dcerpc_seeds.py     # rewrites the .bin files in seeds/dcerpc
"""
import os
import struct
import uuid

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dcerpc")
EMSMDB = uuid.UUID("a4f1db00-ca47-1067-b31f-00dd010662da")
NSPI = uuid.UUID("f5cc5a18-4264-101a-8c59-08002b2f8426")
RFR = uuid.UUID("1544f5e0-613c-11d1-93df-00c04fd7bd09")
EPM = uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")
NDR = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860")
NDR64 = uuid.UUID("71710533-beba-4937-8319-b5dbef9ccc36")
BTFN = uuid.UUID("6cb71c2c-9812-4540-0300-000000000000")


def u(le, fmt, *values):
    return struct.pack(("<" if le else ">") + fmt, *values)


def wire_uuid(le, value):
    return value.bytes_le if le else value.bytes


def syntax(le, value, major, minor):
    return wire_uuid(le, value) + u(le, "I", minor << 16 | major)


def pdu(le, ptype, flags, call_id, body, auth=None):
    """auth: (type, level, pad, verifier_length)"""
    trailer = b""
    auth_length = 0
    if auth:
        kind, level, pad, auth_length = auth
        trailer = b"\0" * pad + bytes([kind, level, pad, 0]) + u(le, "I", 1) + b"\x5a" * auth_length
    length = 16 + len(body) + len(trailer)
    return (bytes([5, 0, ptype, flags, 0x10 if le else 0, 0, 0, 0]) + u(le, "HHI", length, auth_length, call_id)
            + body + trailer)


def tower(interface, major, minor, port=None, ip=0, pipe=False):
    floors = [
        (b"\x0d" + interface.bytes_le + struct.pack("<H", major), struct.pack("<H", minor)),
        (b"\x0d" + NDR.bytes_le + struct.pack("<H", 2), b"\0\0"),
        (b"\x0b", b"\0\0"),
    ]
    if pipe:
        floors += [(b"\x0f", b"\\pipe\\x\0"), (b"\x11", b"SRV\0")]
    else:
        if port is not None:
            floors.append((b"\x07", struct.pack(">H", port)))
        floors.append((b"\x09", struct.pack(">I", ip)))
    out = struct.pack("<H", len(floors))
    for lhs, rhs in floors:
        out += struct.pack("<H", len(lhs)) + lhs + struct.pack("<H", len(rhs)) + rhs
    return out


def align(buf, n):
    return buf + b"\xaa" * (-len(buf) % n)


def map_response_stub(le, towers, referents=None, status=0):
    if referents is None:
        referents = list(range(3, 3 + len(towers)))
    out = bytes(range(20)) + u(le, "IIII", len(referents), max(4, len(referents)), 0, len(referents))
    out += b"".join(u(le, "I", r) for r in referents)
    seen, next_tower = set(), 0
    for r in referents:
        if r == 0 or r in seen:
            continue
        seen.add(r)
        t = towers[next_tower]
        next_tower += 1
        out = align(out, 4) + u(le, "II", len(t), len(t)) + t
    return align(out, 4) + u(le, "I", status)


def map_request_stub(le, t, object_uuid=True):
    out = u(le, "I", 1) + wire_uuid(le, uuid.UUID(int=0)) if object_uuid else u(le, "I", 0)
    out += u(le, "I", 2) + u(le, "II", len(t), len(t)) + t
    return align(out, 4) + b"\0" * 20 + u(le, "I", 4)


def response_fragments(le, stub, cuts, call_id=9):
    cuts = [0] + cuts + [len(stub)]
    out = b""
    for i in range(len(cuts) - 1):
        flags = (1 if i == 0 else 0) | (2 if i == len(cuts) - 2 else 0)
        body = u(le, "IHBB", len(stub) - cuts[i], 0, 0, 0) + stub[cuts[i]:cuts[i + 1]]
        out += pdu(le, 2, flags, call_id, body)
    return out


def bind(le, ptype, contexts, auth=None, call_id=1):
    body = u(le, "HHIB", 5840, 5840, 0, len(contexts)) + b"\0\0\0"
    for cid, (iface, major, minor), transfers in contexts:
        body += u(le, "HBB", cid, len(transfers), 0) + syntax(le, iface, major, minor)
        body += b"".join(syntax(le, t, tmaj, tmin) for t, tmaj, tmin in transfers)
    return pdu(le, ptype, 3, call_id, body, auth)


def bind_ack(le, ptype, port, results, auth=None, call_id=1):
    body = u(le, "HHI", 5840, 4280, 0x1234)
    addr = port.encode() + b"\0" if port else b""
    body += u(le, "H", len(addr)) + addr
    body += b"\0" * (-(16 + len(body)) % 4)  # aligned from the start of the PDU
    body += u(le, "B", len(results)) + b"\0\0\0"
    for result, reason, (t, major, minor) in results:
        body += u(le, "HH", result, reason) + syntax(le, t, major, minor)
    return pdu(le, ptype, 3, call_id, body, auth)


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")


def main():
    towers = [tower(RFR, 1, 0, 1033, 0x0A010101), tower(EMSMDB, 0, 81, 1032, 0x0A010101),
              tower(NSPI, 56, 0, 4997, 0x0A010101)]
    for le, name in ((False, "be"), (True, "le")):
        stub = map_response_stub(le, towers)
        # The second cut falls inside the EMSMDB tower's port.
        port_at = stub.index(struct.pack(">H", 1032))
        write(f"{name}_map_response_3_fragments.bin", response_fragments(le, stub, [40, port_at + 1]))
        client = bind(le, 11, [(0, (EPM, 3, 0), [(NDR, 2, 0)])])
        client += pdu(le, 0, 3, 2, u(le, "IHH", 0, 0, 3) + map_request_stub(le, tower(EMSMDB, 0, 81, 135)))
        write(f"{name}_epm_client.bin", client)
        server = bind_ack(le, 12, "135", [(0, 0, (NDR, 2, 0))])
        server += response_fragments(le, map_response_stub(le, [tower(EMSMDB, 0, 81, 1032, 0xC0A80002)]), [],
                                     call_id=2)
        write(f"{name}_epm_server.bin", server)
    mixed = [tower(EMSMDB, 0, 81, 1032, 0xC0A80002), tower(EMSMDB, 0, 81, pipe=True),
             tower(NSPI, 56, 0, 4997, 0xC0A80002), tower(EMSMDB, 0, 81, None, 0xC0A80002)]
    write("le_map_response_pointers.bin",
          response_fragments(True, map_response_stub(True, mixed, [3, 0, 4, 3, 5, 6]), []))
    write("le_map_not_registered.bin", response_fragments(True, map_response_stub(True, [], [], 0x16C9A0D6), []))
    three = [(0, (EMSMDB, 0, 81), [(NDR, 2, 0)]), (1, (EMSMDB, 0, 81), [(NDR64, 1, 0)]),
             (2, (EMSMDB, 0, 81), [(BTFN, 1, 0)])]
    write("be_bind_3_contexts_privacy.bin", bind(False, 11, three, auth=(9, 6, 0, 40))
          + bind(False, 14, [(3, (NSPI, 56, 0), [(NDR, 2, 0)])], call_id=2))
    write("le_bind_ack_3_results.bin",
          bind_ack(True, 12, "1032", [(0, 0, (NDR, 2, 0)), (2, 2, (uuid.UUID(int=0), 0, 0)),
                                      (3, 3, (uuid.UUID(int=0), 0, 0))], auth=(9, 6, 0, 40))
          + bind_ack(True, 15, "", [(0, 0, (NDR, 2, 0))], call_id=2))


if __name__ == "__main__":
    main()
