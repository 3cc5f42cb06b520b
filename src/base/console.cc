// Stage, progress and table output (console.h).
#include "base/console.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace mlcapsule::console {

bool Interactive(FILE* f) {
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::string(term) == "dumb") return false;
  return isatty(fileno(f)) == 1;
}

ProgressBar::ProgressBar(FILE* out, std::string label, int64_t total, bool interactive)
    : out_(out),
      label_(std::move(label)),
      total_(std::max<int64_t>(1, total)),
      interactive_(interactive),
      start_(std::chrono::steady_clock::now()),
      last_line_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_ && interactive_) std::fputc('\n', out_);
}

void ProgressBar::Update(int64_t done, const std::string& note) {
  done_ = std::clamp<int64_t>(done, 0, total_);
  Draw(false, note);
}

void ProgressBar::Finish(const std::string& note) {
  if (finished_) return;
  Draw(true, note);
  finished_ = true;
}

void ProgressBar::Draw(bool final, const std::string& note) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done_ / total_);
  const std::string bar =
      std::string(static_cast<size_t>(filled), '#') + std::string(kWidth - filled, '.');
  const std::string line = fmt::format("  {:<10} [{}] {:>5}/{} {}{}", label_, bar, done_, total_,
                                       HumanSeconds(elapsed), note.empty() ? "" : "  " + note);
  if (interactive_) {
    // \r, the line, then clear to the end of the line (a shorter line leaves no residue).
    std::fprintf(out_, "\r%s\x1b[K%s", line.c_str(), final ? "\n" : "");
    std::fflush(out_);
    return;
  }
  const int decile = static_cast<int>(10 * done_ / total_);
  const bool slow = std::chrono::duration<double>(now - last_line_).count() >= 5.0;
  // The final line only when it says something the last one did not.
  const bool news = done_ != last_printed_ || !note.empty();
  if ((final && news) || (!final && (decile > last_decile_ || slow))) {
    std::fprintf(out_, "%s\n", line.c_str());
    std::fflush(out_);
    last_decile_ = decile;
    last_printed_ = done_;
    last_line_ = now;
  }
}

std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows,
                  const std::vector<bool>& right) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], row[c].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out = " ";
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      const bool r = c < right.size() && right[c];
      const std::string pad(width[c] - std::min(width[c], cell.size()), ' ');
      out += " " + (r ? pad + cell : cell + (c + 1 < width.size() ? pad : "")) + " ";
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  std::string rule = " ";
  for (size_t c = 0; c < width.size(); ++c) rule += " " + std::string(width[c], '-') + " ";
  while (!rule.empty() && rule.back() == ' ') rule.pop_back();
  out += rule + "\n";
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  if (u == 0) return fmt::format("{} B", bytes);
  return v < 10 ? fmt::format("{:.1f} {}", v, units[u]) : fmt::format("{:.0f} {}", v, units[u]);
}

std::string HumanSeconds(double seconds) {
  if (seconds < 10) return fmt::format("{:.1f} s", seconds);
  if (seconds < 60) return fmt::format("{:.0f} s", seconds);
  const int s = static_cast<int>(seconds + 0.5);
  return fmt::format("{} min {:02d} s", s / 60, s % 60);
}

}  // namespace mlcapsule::console
