// The log line formats (log.h): JSON lines parse back to what was logged, whatever the text
// holds (quotes, control characters, UTF-8, bytes that are not UTF-8), and text lines stay one
// line.
#include "base/log.h"

#include <gtest/gtest.h>

namespace mlcapsule::log {
namespace {

using nlohmann::json;

const auto kTime = std::chrono::system_clock::time_point(std::chrono::milliseconds(1795395723456));

TEST(LogTest, TimeIsRfc3339Utc) { EXPECT_EQ(FormatTime(kTime), "2026-11-23T01:02:03.456Z"); }

TEST(LogTest, JsonEscapesEverything) {
  const std::string tricky =
      "quote \" backslash \\ newline \n tab \t bell \x07 nul " + std::string(1, '\0') + " ü € 😀";
  const std::string line =
      FormatLine(Format::kJson, Level::kWarn, kTime, "server", "attest.refused", tricky,
                 {{"license", "bob-1"}, {"why", tricky}, {"n", 3}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json parsed = json::parse(line);
  EXPECT_EQ(parsed["time"], "2026-11-23T01:02:03.456Z");
  EXPECT_EQ(parsed["level"], "warn");
  EXPECT_EQ(parsed["component"], "server");
  EXPECT_EQ(parsed["event"], "attest.refused");
  EXPECT_EQ(parsed["msg"], tricky);
  EXPECT_EQ(parsed["why"], tricky);
  EXPECT_EQ(parsed["license"], "bob-1");
  EXPECT_EQ(parsed["n"], 3);
  EXPECT_NE(line.find("\\u0007"), std::string::npos);
  EXPECT_NE(line.find("ü € 😀"), std::string::npos);  // UTF-8 kept, not \u-escaped
}

TEST(LogTest, JsonReplacesInvalidUtf8) {
  const std::string bad =
      "a\xff\xfe"
      "b";
  const std::string line =
      FormatLine(Format::kJson, Level::kInfo, kTime, "server", "e", bad, {{"field", bad}});
  const json parsed = json::parse(line);
  EXPECT_EQ(parsed["msg"],
            "a\xEF\xBF\xBD\xEF\xBF\xBD"
            "b");
}

TEST(LogTest, JsonFieldsCannotOverrideFixedKeys) {
  const json parsed = json::parse(FormatLine(Format::kJson, Level::kInfo, kTime, "server", "e", "m",
                                             {{"level", "x"}, {"msg", "y"}}));
  EXPECT_EQ(parsed["level"], "info");
  EXPECT_EQ(parsed["msg"], "m");
  EXPECT_EQ(parsed["level_"], "x");
  EXPECT_EQ(parsed["msg_"], "y");
}

TEST(LogTest, TextIsOneLineWithKeyValues) {
  const std::string line = FormatLine(
      Format::kText, Level::kInfo, kTime, "server", "usage.recorded", "usage recorded\nsecond line",
      {{"license", "bob-1"}, {"detail", "two words"}, {"billed", 4}, {"ok", true}});
  EXPECT_EQ(line,
            "2026-11-23T01:02:03.456Z info server: usage recorded\\nsecond line "
            "event=usage.recorded license=bob-1 detail=\"two words\" billed=4 ok=true");
}

TEST(LogTest, LevelsParseAndFilter) {
  EXPECT_EQ(ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(ParseLevel("warning"), Level::kWarn);
  EXPECT_FALSE(ParseLevel("loud").has_value());
  EXPECT_EQ(ParseFormat("json"), Format::kJson);
  EXPECT_FALSE(ParseFormat("xml").has_value());
  SetLevel(Level::kWarn);
  EXPECT_FALSE(Enabled(Level::kInfo));
  EXPECT_TRUE(Enabled(Level::kError));
  SetLevel(Level::kOff);
  EXPECT_FALSE(Enabled(Level::kError));
  SetLevel(Level::kInfo);
}

}  // namespace
}  // namespace mlcapsule::log
