// The single `mlcapsule` command. Each subcommand lives in its own cmd_*.cc file.
#include <cstdio>
#include <string_view>

#include "base/log.h"
#include "cli/cli_common.h"
#include "engine/plan.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "lab")
    return mlcapsule::cli::RunLabCommand(argc, argv);
  CLI::App app{
      "MLCapsule: guarded offline deployment of machine learning as a service.\n"
      "Providers compile, encrypt and sign models into capsules and license them; clients run\n"
      "capsules offline inside the trusted core, metered. Also: compile, run, check and time "
      "models."};
  app.require_subcommand(1);
  // Structured logs (docs/cli.md, "Logging"): accepted before or after the command's name.
  app.fallthrough();
  app.add_option_function<std::string>(
         "--log-level",
         [](const std::string& v) { mlcapsule::log::SetLevel(*mlcapsule::log::ParseLevel(v)); },
         "Log level on stderr: trace, debug, info (default), warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->envname("MLCAPSULE_LOG_LEVEL");
  app.add_option_function<std::string>(
         "--log-format",
         [](const std::string& v) { mlcapsule::log::SetFormat(*mlcapsule::log::ParseFormat(v)); },
         "Log format on stderr: text (default) or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}))
      ->envname("MLCAPSULE_LOG_FORMAT");
  app.set_version_flag("--version", std::string("mlcapsule ") + mlcapsule::cli::kVersion +
                                        " (plan format " +
                                        std::to_string(mlcapsule::engine::kPlanVersion) + ")");
  app.footer(
      "Run `mlcapsule COMMAND --help` for a command's options. Exit status: 0 success, 1 failure,\n"
      "2 usage error, 3 unsupported model or input; per command in docs/cli.md.");
  mlcapsule::cli::AddModelCommands(app);
  mlcapsule::cli::AddCapsuleCommands(app);
  mlcapsule::cli::AddServeCommand(app);
  mlcapsule::cli::AddServerCommands(app);
  mlcapsule::cli::AddEvidenceCommand(app);
  mlcapsule::cli::AddTeeCommand(app);
  mlcapsule::cli::AddWatermarkCommand(app);
  mlcapsule::cli::AddConformanceCommand(app);
  mlcapsule::cli::AddBenchCommand(app);
  mlcapsule::cli::AddLabCommand(app);
  mlcapsule::cli::AddDemoCommand(app);
  // The commands that log events say so in their own --help (the options are the app's).
  for (const char* name : {"server", "serve", "run"})
    app.get_subcommand(name)->footer(
        "Logging (stderr): --log-level trace|debug|info|warn|error|off (default info), "
        "--log-format text|json (default text); docs/cli.md, \"Logging\".");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : mlcapsule::cli::kExitUsage;
  }
  return mlcapsule::cli::ExitCode();
}
