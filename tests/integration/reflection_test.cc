// Server reflection, proved with a real third-party client: reflection/reflection_client.js
// (npm's grpc-js-reflection-client on @grpc/grpc-js, pinned in reflection/package-lock.json)
// knows nothing of reptrace's .proto files. Through reflection alone it lists the
// controller's services and changes the config document; reptracectl then sees the change.
#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/stack.h"

namespace reptrace::testing {
namespace {

using nlohmann::json;
using ::testing::IsSupersetOf;

// A uint64 in JSON: a number (reptracectl) or a decimal string (protobuf's JSON mapping,
// and grpc-js with longs as strings); 0 if it is neither.
uint64_t Uint64(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  uint64_t out = 0;
  if (value.is_string() && absl::SimpleAtoi(value.get<std::string>(), &out)) return out;
  return 0;
}

TEST(ReflectionTest, ThirdPartyReflectionClientListsServicesAndSetsTheConfig) {
  Stack stack;
  ASSERT_TRUE(stack.StartController());

  const CommandResult run =
      RunCommand({"node", REPTRACE_REFLECTION_CLIENT, stack.controller_address()}, {},
                 absl::Seconds(60));
  ASSERT_EQ(run.exit_code, 0) << "reflection client failed:\n" << run.err << run.out;
  const json summary = json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(summary.is_object()) << "not a JSON summary:\n" << run.out;

  EXPECT_THAT(summary["services"].get<std::vector<std::string>>(),
              IsSupersetOf({"reptrace.v1.ConfigService", "reptrace.v1.QueryService",
                            "grpc.health.v1.Health"}));
  // Health/Check called through reflection alone: the controller links the health
  // service's descriptors in for that (proto/grpc/health/v1/health.proto, grpc/grpc#36665).
  EXPECT_EQ(summary["health"], "SERVING") << summary.dump(2);
  const uint64_t before = Uint64(summary["before"]["version"]);
  ASSERT_GE(before, 1u) << summary.dump(2);
  EXPECT_EQ(Uint64(summary["set"]["version"]), before + 1) << summary.dump(2);
  EXPECT_EQ(Uint64(summary["after"]["version"]), before + 1) << summary.dump(2);
  EXPECT_EQ(summary["after"]["config"]["capture_bytes"], 64) << summary.dump(2);

  // The change is real: the controller's own client reads it back.
  const json current = stack.CtlJson({"config", "get"});
  ASSERT_TRUE(current.is_object()) << "reptracectl config get failed";
  EXPECT_EQ(Uint64(current["version"]), before + 1) << current.dump(2);
  EXPECT_EQ(current["author"], "reflection-client") << current.dump(2);
  EXPECT_EQ(current["config"]["capture_bytes"], 64) << current.dump(2);
  EXPECT_EQ(current["config"]["enabled"], true) << current.dump(2);
  EXPECT_EQ(current["config"]["sampling"]["probability"], 1.0) << current.dump(2);
}

}  // namespace
}  // namespace reptrace::testing
