// `mlcapsule lab ...`: the lab (attacks and evaluation) lives in its own executable, mlcapsule-lab,
// beside this one, because it links libtorch (hundreds of MB) that neither the client commands
// nor the trusted core should load. This command hands its arguments over to it unchanged.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli_common.h"

namespace mlcapsule::cli {

int RunLabCommand(int argc, char** argv) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string lab = (ec ? std::filesystem::path(".") : self.parent_path()) / "mlcapsule-lab";
  std::vector<char*> args;
  args.push_back(const_cast<char*>(lab.c_str()));
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(lab.c_str(), args.data());
  std::fprintf(stderr,
               "mlcapsule: lab: cannot run %s: %s\n(the lab is built when libtorch is installed: "
               "apt-get install libtorch-dev, then rebuild)\n",
               lab.c_str(), std::strerror(errno));
  return kExitFailure;
}

void AddLabCommand(CLI::App& app) {
  // Listed for --help; main() hands `mlcapsule lab ...` to RunLabCommand before parsing.
  app.add_subcommand("lab",
                     "Security evaluator: attack capsules (extraction, membership inference, "
                     "reverse engineering) with and without defenses, and report (`mlcapsule lab "
                     "--help`; runs mlcapsule-lab)")
      ->allow_extras();
}

}  // namespace mlcapsule::cli
