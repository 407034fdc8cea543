#include "agent/protocol/internal/text.h"

#include <string>

#include "gtest/gtest.h"

namespace reptrace {
namespace protocol {
namespace internal {
namespace {

using namespace std::string_literals;

TEST(CleanText, KeepsValidUtf8) {
  EXPECT_EQ(CleanText("plain"), "plain");
  EXPECT_EQ(CleanText("relation \xc2\xab\xc3\xa9t\xc3\xa9\xc2\xbb \xe2\x82\xac \xf0\x9f\x98\x80"),
            "relation \xc2\xab\xc3\xa9t\xc3\xa9\xc2\xbb \xe2\x82\xac \xf0\x9f\x98\x80");
}

TEST(CleanText, ReplacesControlCharactersWithSpaces) {
  EXPECT_EQ(CleanText("a\tb\r\nc\0d\x7f"s), "a b  c d ");
}

TEST(CleanText, ReplacesInvalidBytes) {
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(CleanText("a\xff" "b"), "a" + fffd + "b");
  EXPECT_EQ(CleanText("\xc0\xaf"), fffd + fffd);              // overlong '/'
  EXPECT_EQ(CleanText("\xed\xa0\x80"), fffd + fffd + fffd);  // a surrogate
  EXPECT_EQ(CleanText("\xf4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // above U+10FFFF
  EXPECT_EQ(CleanText("\xc3(x"), fffd + "(x");
}

TEST(CleanText, DropsASequenceCutByTheEnd) {
  EXPECT_EQ(CleanText("caf\xc3"), "caf");
  EXPECT_EQ(CleanText("x\xf0\x9f\x98"), "x");
}

TEST(IsCleanText, AcceptsWhatCleanTextReturns) {
  EXPECT_TRUE(IsCleanText(""));
  EXPECT_TRUE(IsCleanText("caf\xc3\xa9"));
  EXPECT_FALSE(IsCleanText("caf\xc3"));
  EXPECT_FALSE(IsCleanText("a\nb"));
  EXPECT_FALSE(IsCleanText("\xff"));
  for (const std::string& s : {"a\xff\xc3"s, "\x01\xe2\x82"s, "\xed\xa0\x80z"s}) {
    EXPECT_TRUE(IsCleanText(CleanText(s))) << s;
  }
}

}  // namespace
}  // namespace internal
}  // namespace protocol
}  // namespace reptrace
