// mlcapsule-lab: the lab's executable (`mlcapsule lab ...` runs it). Subcommands `run` and
// `report` (runner.h), and `steal` (steal.h), the demo's thief. libtorch is confined to this
// binary.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lab/runner.h"
#include "lab/steal.h"

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
  mlcapsule::lab::StealOptions steal;
  CLI::App* steal_cmd = app.add_subcommand(
      "steal",
      "Steal a capsule's model as one of its licensed customers. This is a real client: it "
      "opens the capsule with its own --state, gets its lease from the license server with "
      "the --license-file token, spends --budget queries with an extraction attack (JbDA by "
      "default, seeded from the lab's attacker pool of Fashion-MNIST) and reports its usage to "
      "the server every --sync-every queries, as an honest client must: the provider then sees "
      "PRADA's alarm and the escrowed watermark samples. It trains two thieves on the answers: "
      "'memorising' (an MLP, 300 epochs, reproduces its answers, wrong ones included) and "
      "'generalising' (a CNN, 40 epochs, the usual recipe). Writes OUT/stolen-memorising.onnx, "
      "OUT/stolen-generalising.onnx, OUT/reports/ (the usage reports it sent) and "
      "OUT/steal.json, which it also prints as the last line of stdout.");
  steal_cmd->add_option("--capsule", steal.capsule_path, "The capsule to steal from")
      ->required()
      ->check(CLI::ExistingFile);
  steal_cmd->add_option("--state", steal.state_dir, "The thief's client state directory")
      ->required();
  steal_cmd->add_option("--server", steal.server_url, "License server, https://HOST:PORT")
      ->required();
  steal_cmd->add_option("--ca-cert", steal.ca_cert, "PEM certificate that verifies the server")
      ->check(CLI::ExistingFile);
  steal_cmd->add_option("--license-file", steal.license_file, "The thief's license token file")
      ->required()
      ->check(CLI::ExistingFile);
  steal_cmd->add_option("-o,--out", steal.out_dir, "Output directory")->required();
  steal_cmd->add_option("--attack", steal.attack, "Extraction attack (default jbda)")
      ->check(CLI::IsMember({"jbda", "random"}));
  steal_cmd->add_option("--budget", steal.budget, "Queries to spend (default 2000)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  steal_cmd
      ->add_option("--sync-every", steal.sync_every,
                   "Report usage and renew the lease every this many queries (default 500)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  steal_cmd->add_option("--seed", steal.seed, "The thief's seed (default 1)");
  steal_cmd->add_option("--data-dir", steal.data_dir,
                        "Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)");
  steal_cmd
      ->add_option("--progress-fd", steal.progress_fd,
                   "Write progress as JSON lines to this open descriptor instead of stderr: "
                   "{\"phase\":\"query\",\"done\":N,\"total\":B}, "
                   "{\"phase\":\"sync\",\"done\":N}, {\"phase\":\"alarm_seen\",\"at\":N}, "
                   "{\"phase\":\"train\",\"thief\":NAME,\"epoch\":E,\"epochs\":T}, "
                   "{\"phase\":\"done\"}")
      ->check(CLI::Range(0, 1 << 20));
  steal_cmd->add_option("--core", steal.core_binary,
                        "The mlcapsule-core binary (default: beside this executable)");
  steal_cmd->add_flag("-q,--quiet", steal.quiet, "No progress output on stderr");
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
  } else if (*steal_cmd) {
    if (steal.progress_fd >= 0 && fcntl(steal.progress_fd, F_GETFD) < 0) {
      std::fprintf(stderr, "mlcapsule lab: error: --progress-fd %d is not an open descriptor\n",
                   steal.progress_fd);
      return 2;
    }
    mlcapsule::Result<std::string> summary = mlcapsule::lab::Steal(steal);
    if (summary.ok()) {
      std::printf("%s\n", summary->c_str());
    } else {
      status = summary.status();
    }
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
