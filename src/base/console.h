// Terminal output for long commands (`mlcapsule demo`): numbered stage headings, a progress bar
// that redraws in place on a terminal and prints a few plain lines otherwise, and aligned tables.
// No colour, no terminal database: only '\r' on a TTY. Never linked into the trusted core.
//
//   console::ProgressBar bar(stderr, "queries", 2000);
//   for (...) bar.Update(done);
//   bar.Finish("2000 queries in 4.1 s");
//   std::fputs(console::Table({"stage", "time"}, rows, {false, true}).c_str(), stdout);
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mlcapsule::console {

// True when `f` is a terminal (and TERM is not "dumb"): progress may redraw in place.
bool Interactive(FILE* f);

class ProgressBar {
 public:
  // `interactive` false: one line at each 10% step or every 5 s, for logs and pipes.
  ProgressBar(FILE* out, std::string label, int64_t total, bool interactive);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  // `done` of total, with an optional note after the count ("epoch 40/300").
  void Update(int64_t done, const std::string& note = "");
  // Completes the line (or prints it) with `note`.
  void Finish(const std::string& note);

 private:
  void Draw(bool final, const std::string& note);
  FILE* out_;
  std::string label_;
  int64_t total_, done_ = 0, last_printed_ = -1;
  bool interactive_, finished_ = false;
  int last_decile_ = 0;  // piped: lines at 10%, 20%, ... (and every 5 s)
  std::chrono::steady_clock::time_point start_, last_line_;
};

// Columns aligned; `right[i]` right-aligns column i (numbers). A rule under the header.
std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows,
                  const std::vector<bool>& right = {});
// "740 KB", "3.2 MB", "512 B" (powers of 1024, one decimal above 10 units none).
std::string HumanBytes(uint64_t bytes);
// "0.4 s", "12 s", "2 min 05 s".
std::string HumanSeconds(double seconds);

}  // namespace mlcapsule::console
