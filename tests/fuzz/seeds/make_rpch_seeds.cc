// Writes the seeds of rpch_fuzz into the folder given (tests/fuzz/seeds/rpch), from the
// project's own RTS builders: the handshake and flow-control PDUs, a recycling PDU, and
// whole IN / OUT channel and MAPI over HTTP exchanges (head + body). Not a test:
//     build-fuzz/make_rpch_seeds tests/fuzz/seeds/rpch
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "protocols/common/dcerpc/rts.h"

using namespace wanopt::protocols::dcerpc;
using Bytes = std::vector<uint8_t>;

namespace {

void Write(const std::string& dir, const std::string& name, const Bytes& b) {
  std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()),
                                                           static_cast<std::streamsize>(b.size()));
}
Bytes Text(const std::string& s) { return Bytes(s.begin(), s.end()); }
Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_rpch_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const Uuid vc = *Uuid::Parse("6f1d6a6e-3c52-4d0a-9b1e-2a8f0c7d5e41");
  const Uuid in = *Uuid::Parse("0e2c9b7a-51d4-4f83-a6e0-7d3b18c49f02");
  const Uuid out = *Uuid::Parse("c4a8e1f0-93b2-4e57-8d1c-5f06a7b2e913");
  const Uuid assoc = *Uuid::Parse("2b7f4c19-e8a3-4d60-b5f2-91c3d08e7a64");
  const Uuid next = *Uuid::Parse("9d3e5a82-07bc-4f1e-a4d9-3c6b20f1e857");
  const Bytes a1 = BuildConnA1(vc, out), b1 = BuildConnB1(vc, in, assoc), a3 = BuildConnA3(), c2 = BuildConnC2();
  const RtsCommand recycle[] = {rts_cmd::Value(RtsCommandType::kVersion, 1), rts_cmd::Cookie(vc),
                                rts_cmd::Cookie(in), rts_cmd::Cookie(next)};
  const RtsCommand b2[] = {rts_cmd::Value(RtsCommandType::kVersion, 1), rts_cmd::Cookie(vc), rts_cmd::Cookie(in),
                           rts_cmd::Value(RtsCommandType::kReceiveWindowSize, 65536),
                           rts_cmd::Value(RtsCommandType::kConnectionTimeout, 900000),
                           rts_cmd::AssociationGroupId(assoc), rts_cmd::ClientAddressV4({198, 18, 0, 7})};
  const RtsCommand c1_padding[] = {rts_cmd::Padding(24)};
  Write(dir, "conn_a1.bin", a1);
  Write(dir, "conn_b1.bin", b1);
  Write(dir, "conn_a3_c2.bin", Cat({a3, c2}));
  Write(dir, "conn_b2.bin", BuildRts(rts_flags::kInChannel, b2));
  Write(dir, "in_r1_a1.bin", BuildRts(rts_flags::kRecycleChannel, recycle));
  Write(dir, "out_r2_c1_padding.bin", BuildRts(rts_flags::kPing, c1_padding));
  Write(dir, "flow_control_ack_ping.bin", Cat({BuildFlowControlAck(65536, 131072, in), BuildPing()}));
  Write(dir, "in_channel.bin",
        Cat({Text("RPC_IN_DATA /rpc/rpcproxy.dll?exchange:6001 HTTP/1.1\r\nAccept: application/rpc\r\n"
                  "User-Agent: MSRPC\r\nExpect: 100-continue\r\nContent-Length: 1073741824\r\n\r\n"),
             b1}));
  Write(dir, "out_channel_response.bin",
        Cat({Text("HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n"),
             a3, c2}));
  Write(dir, "out_channel_request.bin",
        Cat({Text("RPC_OUT_DATA /rpc/rpcproxy.dll?exchange:6001 HTTP/1.0\r\nContent-Length: 76\r\n\r\n"), a1}));
  Write(dir, "unauthorized.bin",
        Text("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nWWW-Authenticate: Basic realm=\"x\"\r\n"
             "Content-Length: 0\r\n\r\n"));
  Write(dir, "mapi_chunked.bin",
        Text("POST /mapi/emsmdb/?MailboxId=a@b HTTP/1.1\r\nX-RequestType: Execute\r\nX-RequestId: {1}:2\r\n"
             "Content-Type: application/mapi-http\r\nTransfer-Encoding: chunked\r\n\r\n"
             "a;ext=1\r\n0123456789\r\n3\r\nabc\r\n0\r\nX-Trailer: v\r\n\r\n"));
  return 0;
}
