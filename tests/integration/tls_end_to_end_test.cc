// HTTPS on the whole data path: curl and nginx both use libssl dynamically, so the hook
// records their plaintext (hook/tls.h) and the agent and controller link the request
// exactly as they link plain HTTP. In in-band mode the frames go around the TLS records
// (below libssl), and the spans, named from the plaintext, get their parents from them.
#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;

class TlsEndToEndTest : public ::testing::TestWithParam<bool> {};  // in-band mode?

TEST_P(TlsEndToEndTest, HttpsCurlToNginxIsOneTraceOfTwoSpansNamedByThePlaintextRequest) {
  const bool inband = GetParam();
  Stack stack;
  ASSERT_TRUE(stack.StartController());
  ASSERT_TRUE(stack.StartAgent());
  const std::string www = stack.dir() + "/www";
  mkdir(www.c_str(), 0755);
  std::ofstream(www + "/file") << "served over TLS\n";
  const CommandResult cert = RunCommand(
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
       "-days", "1", "-keyout", stack.dir() + "/key.pem", "-out", stack.dir() + "/cert.pem"});
  ASSERT_EQ(cert.exit_code, 0) << cert.err;
  const int port = stack.StartNginx(absl::StrCat(
      "server { listen 127.0.0.1:$PORT ssl; ssl_certificate ", stack.dir(), "/cert.pem; ",
      "ssl_certificate_key ", stack.dir(), "/key.pem; location / { root ", www, "; } }"));
  ASSERT_GT(port, 0);

  std::vector<std::string> argv = {"curl", "-sS", "-k", "--fail", "--max-time", "10",
                                   absl::StrCat("https://127.0.0.1:", port, "/file")};
  if (inband) {
    argv.insert(argv.begin(), {"env", absl::StrCat("REPTRACE_INBAND_PORTS=", port)});
  }
  const CommandResult curl = stack.RunTraced(argv);
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  EXPECT_EQ(curl.out, "served over TLS\n");

  json traces;
  WaitUntil(
      [&] {
        traces = stack.Traces("curl");
        return traces.size() == 1 && traces[0]["span_count"].get<int>() >= 2;
      },
      absl::Seconds(20));
  ASSERT_EQ(traces.size(), 1u) << traces.dump(2) << stack.Logs();
  EXPECT_EQ(traces[0]["span_count"], 2) << traces.dump(2);
  EXPECT_EQ(traces[0]["root_name"], "GET /file") << traces.dump(2);

  const json trace = stack.Trace(traces[0]["trace_id"]);
  ASSERT_TRUE(trace.is_object()) << "reptracectl trace failed";
  const json& spans = trace["spans"];
  ASSERT_EQ(spans.size(), 2u) << trace.dump(2);
  const json* client = nullptr;
  const json* server = nullptr;
  for (const auto& span : spans) {
    if (span["service"] == "curl" && span["kind"] == "client") client = &span;
    if (span["service"] == "nginx" && span["kind"] == "server") server = &span;
  }
  ASSERT_TRUE(client != nullptr && server != nullptr) << trace.dump(2);
  EXPECT_EQ((*server)["parent_span_id"], (*client)["span_id"]);
  EXPECT_EQ((*client)["name"], "GET /file");
  EXPECT_EQ((*server)["name"], "GET /file");
  // In in-band mode the server span's parent came in a frame (it carries the frame's
  // trace id); otherwise from the connection's addresses and offsets.
  pqxx::connection conn(stack.db_conninfo());
  pqxx::read_transaction tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM spans WHERE kind = 2 AND "
                     "attributes ? 'inband.trace_id'")[0]
                .as<int>(),
            inband ? 1 : 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, TlsEndToEndTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "InBand" : "Passive"; });

}  // namespace
}  // namespace reptrace::testing
