// mlcapsule-lab: the lab's executable (`mlcapsule lab ...` runs it). Subcommands `run` and
// `report` (runner.h). libtorch is confined to this binary.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lab/runner.h"

namespace {

// OpenBLAS and OpenMP read their thread counts when the libraries load, before main(): the lab
// runs one libtorch thread per job (concurrent jobs are faster than intra-op threads on small
// models), so it sets them and executes itself again once.
void PinLibraryThreads(char** argv) {
  if (std::getenv("MLCAPSULE_LAB_PINNED") != nullptr) return;
  setenv("MLCAPSULE_LAB_PINNED", "1", 1);
  setenv("OMP_NUM_THREADS", "1", 1);
  setenv("OPENBLAS_NUM_THREADS", "1", 1);
  setenv("MKL_NUM_THREADS", "1", 1);
  execv("/proc/self/exe", argv);
  // Could not re-execute: go on with the library defaults (slower, same results).
}

}  // namespace

int main(int argc, char** argv) {
  PinLibraryThreads(argv);
  CLI::App app{
      "mlcapsule lab: attack capsules as a client would (extraction, membership inference, "
      "reverse engineering), with and without each defense, and report the numbers.\n"
      "docs/lab.md explains the configuration, the attacks and every number in the report."};
  app.name("mlcapsule lab");
  app.require_subcommand(1);
  mlcapsule::lab::RunOptions run;
  CLI::App* run_cmd = app.add_subcommand(
      "run",
      "Run the attack x defense matrix of CONFIG (JSON; examples/lab/quick.json, full.json) and "
      "write results.json, report.md, results.csv, fidelity.png and roc.png into --out");
  run_cmd->add_option("CONFIG", run.config_path, "Lab configuration (JSON)")
      ->required()
      ->check(CLI::ExistingFile);
  run_cmd->add_option("-o,--out", run.out_dir, "Output directory")->required();
  run_cmd->add_option("--cache", run.cache_dir,
                      "Cache of trained models and finished jobs (default OUT/cache); a run "
                      "resumes from it and a repeated run reuses it");
  run_cmd
      ->add_option("-j,--jobs", run.jobs,
                   "Concurrent jobs, one libtorch thread each (default: the config's, 2)")
      ->check(CLI::Range(1, 64));
  run_cmd->add_flag("-q,--quiet", run.quiet, "No progress output");
  std::string report_dir;
  CLI::App* report_cmd = app.add_subcommand(
      "report", "Remake report.md, results.csv and the plots from DIR/results.json");
  report_cmd->add_option("DIR", report_dir, "A `lab run` output directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  mlcapsule::Status status = mlcapsule::Status::Ok();
  if (*run_cmd) {
    status = mlcapsule::lab::RunLab(run);
    if (status.ok())
      std::printf("lab: wrote %s/report.md, results.json, results.csv, fidelity.png, roc.png\n",
                  run.out_dir.c_str());
  } else if (*report_cmd) {
    status = mlcapsule::lab::WriteReport(report_dir);
    if (status.ok())
      std::printf("lab: wrote %s/report.md, results.csv and the plots\n", report_dir.c_str());
  }
  if (!status.ok()) {
    std::fprintf(stderr, "mlcapsule lab: error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
