#include "wanopt/cli/show.h"

#include <cstdio>
#include <string>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "util/url.h"

namespace wanopt::cli {

const char kShowHelp[] =
    "usage: wanopt show connections|peers|summary|datastore|wccp|modules [--json] [--api URL]\n"
    "                   [--token TOKEN] [--filter TEXT]\n"
    "\n"
    "Prints what a running daemon's status page shows, from its API. modules: what\n"
    "the protocol modules' box-wide parts hold (e.g. mapi's port bindings).\n"
    "\n"
    "  --api URL      the daemon's [status] address (default http://127.0.0.1:7880)\n"
    "  --token TOKEN  the status token, when the daemon has one\n"
    "  --json         print the API's JSON instead of a table\n"
    "  --filter TEXT  connections: only those whose addresses, peer, application,\n"
    "                 state or notes contain TEXT\n";

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using boost::asio::ip::tcp;


}  // namespace

int Show(const std::vector<std::string_view>& args) {
  std::string what, api = "http://127.0.0.1:7880", token, filter;
  bool json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::fputs(kShowHelp, stdout);
      return 0;
    }
    if (args[i] == "--json") json = true;
    else if (args[i] == "--api" && i + 1 < args.size()) api = args[++i];
    else if (args[i] == "--token" && i + 1 < args.size()) token = args[++i];
    else if (args[i] == "--filter" && i + 1 < args.size()) filter = args[++i];
    else if (what.empty() && args[i].substr(0, 1) != "-") what = args[i];
    else {
      std::fprintf(stderr, "wanopt: show: unexpected argument '%s'\n\n%s", std::string(args[i]).c_str(), kShowHelp);
      return 2;
    }
  }
  if (what != "connections" && what != "peers" && what != "summary" && what != "datastore" && what != "wccp" &&
      what != "modules") {
    std::fprintf(stderr, "wanopt: show: say what to show: connections, peers, summary, datastore, wccp or modules\n\n%s",
                 kShowHelp);
    return 2;
  }
  // http://HOST:PORT[/]: the status server speaks plain HTTP on a management address.
  std::string rest = api;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  else if (rest.find("://") != std::string::npos) {
    std::fprintf(stderr, "wanopt: show: --api %s: only http:// is supported\n", api.c_str());
    return 2;
  }
  rest = rest.substr(0, rest.find('/'));
  std::string host = rest, port = "80";
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos && rest.find(']') == std::string::npos ? true : colon > rest.find(']')) {
    if (colon != std::string::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
    }
  }
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);

  std::string target = "/api/" + what;
  std::string query;
  if (!json) query += "format=text";
  if (!filter.empty()) query += std::string(query.empty() ? "" : "&") + "filter=" + UrlEncode(filter);
  if (!query.empty()) target += "?" + query;

  try {
    boost::asio::io_context io;
    tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(resolver.resolve(host, port));
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, host);
    req.set(http::field::user_agent, "wanopt-show");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    if (res.result() == http::status::unauthorized) {
      std::fprintf(stderr, "wanopt: show: %s needs its access token (--token)\n", api.c_str());
      return 1;
    }
    if (res.result() != http::status::ok) {
      std::fprintf(stderr, "wanopt: show: %s%s: HTTP %u\n", api.c_str(), target.c_str(), res.result_int());
      return 1;
    }
    std::fputs(res.body().c_str(), stdout);
    if (json) std::fputs("\n", stdout);
  } catch (const boost::system::system_error& e) {
    std::fprintf(stderr, "wanopt: show: cannot reach %s: %s (is the daemon running with [status] listen set?)\n",
                 api.c_str(), e.code().message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace wanopt::cli
