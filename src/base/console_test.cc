// Console output: tables align, sizes and times read as a person writes them, and a progress bar
// in a pipe prints one line per 10% and a final line instead of redrawing.
#include "base/console.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace mlcapsule::console {
namespace {

std::string ReadAll(FILE* f) {
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  return s;
}

TEST(Console, TableAlignsColumns) {
  const std::string t =
      Table({"stage", "seconds"}, {{"pack", "0.1"}, {"attack", "61.2"}}, {false, true});
  EXPECT_EQ(t,
            "  stage   seconds\n"
            "  ------  -------\n"
            "  pack        0.1\n"
            "  attack     61.2\n");
}

TEST(Console, HumanUnits) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(740 * 1024), "740 KB");
  EXPECT_EQ(HumanBytes(3'355'443), "3.2 MB");
  EXPECT_EQ(HumanSeconds(0.42), "0.4 s");
  EXPECT_EQ(HumanSeconds(12.4), "12 s");
  EXPECT_EQ(HumanSeconds(125), "2 min 05 s");
}

TEST(Console, PipedProgressPrintsDecilesNotRedraws) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressBar bar(f, "queries", 100, /*interactive=*/false);
    for (int i = 1; i <= 100; ++i) bar.Update(i);
    bar.Finish("done");
  }
  const std::string out = ReadAll(f);
  std::fclose(f);
  EXPECT_EQ(out.find('\r'), std::string::npos);
  int lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_EQ(lines, 11);  // 10%, 20%, ..., 100%, then the final line
  EXPECT_NE(out.find("[##############################]   100/100"), std::string::npos);
  EXPECT_NE(out.find("done"), std::string::npos);
}

TEST(Console, InteractiveProgressRedrawsOneLine) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressBar bar(f, "train", 4, /*interactive=*/true);
    for (int i = 1; i <= 4; ++i) bar.Update(i, "epoch");
    bar.Finish("fit 99.9%");
  }
  const std::string out = ReadAll(f);
  std::fclose(f);
  int newlines = 0, returns = 0;
  for (char c : out) newlines += c == '\n', returns += c == '\r';
  EXPECT_EQ(newlines, 1);
  EXPECT_EQ(returns, 5);
  EXPECT_NE(out.find("fit 99.9%\x1b[K\n"), std::string::npos);  // cleared to the end, then done
}

}  // namespace
}  // namespace mlcapsule::console
