#include "agent/config_holder.h"

#include "gtest/gtest.h"

namespace reptrace {
namespace {

v1::ConfigVersion ConfigNumber(uint64_t version, double probability) {
  v1::ConfigVersion config;
  config.set_version(version);
  config.mutable_config()->mutable_sampling()->set_probability(probability);
  return config;
}

TEST(ConfigHolder, HoldsNothingBeforeTheFirstConfig) {
  ConfigHolder holder;
  EXPECT_EQ(holder.version(), 0u);
  EXPECT_FALSE(holder.current().has_config());
}

TEST(ConfigHolder, HoldsTheLastConfigSetAndSaysWhenItsVersionChanged) {
  ConfigHolder holder;
  EXPECT_TRUE(*holder.Set(ConfigNumber(2, 0.5)));
  EXPECT_FALSE(*holder.Set(ConfigNumber(2, 0.5)));  // the same again, as after a reconnection
  EXPECT_TRUE(*holder.Set(ConfigNumber(3, 0.25)));
  EXPECT_EQ(holder.version(), 3u);
  EXPECT_EQ(holder.current().config().sampling().probability(), 0.25);
}

}  // namespace
}  // namespace reptrace
