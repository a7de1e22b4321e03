"""A minimal netlink-queue reader for netlab_test's lab m: the kernel's
nfnetlink_queue protocol spoken over a raw socket (no library), to give one queued
packet a verdict with a mark. netlab_intercept_checks.py runs it in the branch
namespace as `nfqueue_verdict.py QUEUE MARK`."""
import socket
import struct
import sys
import time


def verdict_helper(queue, mark):
    """Binds netlink queue QUEUE, prints 'bound', then gives the
    first packet NF_ACCEPT with MARK ('hold': no verdict for 1.5 s), prints
    it, exits. Nothing but the kernel's nfnetlink_queue protocol (no library)."""
    def attr(kind, payload):
        n = 4 + len(payload)
        return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)

    def message(kind, attrs, flags=1):  # NLM_F_REQUEST; subsystem 3 = queue
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
        return struct.pack("=IHHII", 16 + len(body), (3 << 8) | kind, flags, 0, 0) + body

    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    s.settimeout(10)
    s.bind((0, 0))
    s.send(message(2, attr(1, struct.pack("!BBH", 1, 0, socket.AF_INET))))  # config: bind
    s.send(message(2, attr(2, struct.pack("!IB", 128, 2))))  # copy 128 bytes of packet
    print("bound", flush=True)
    while True:
        data = s.recv(65536)
        off = 0
        while off < len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == (3 << 8):  # a queued packet
                at, packet_id, packet = off + 20, None, b""
                while at < off + length:
                    alen, akind = struct.unpack_from("=HH", data, at)
                    if akind & 0x7FFF == 1:
                        packet_id = struct.unpack_from("!I", data, at + 4)[0]
                    elif akind & 0x7FFF == 10:
                        packet = data[at + 4:at + alen]
                    at += (alen + 3) & ~3
                ihl = (packet[0] & 15) * 4
                print(f"queued {socket.inet_ntoa(packet[12:16])}:{struct.unpack_from('!H', packet, ihl)[0]}"
                      f" -> {socket.inet_ntoa(packet[16:20])}:{struct.unpack_from('!H', packet, ihl + 2)[0]}"
                      f" flags 0x{packet[ihl + 13]:02x}", flush=True)
                if mark == "hold":
                    time.sleep(1.5)
                else:
                    s.send(message(1, attr(2, struct.pack("!II", 1, packet_id))  # NF_ACCEPT
                                   + attr(3, struct.pack("!I", int(mark, 0)))))
                return
            off += (length + 3) & ~3


if __name__ == "__main__":
    verdict_helper(int(sys.argv[1]), sys.argv[2])
