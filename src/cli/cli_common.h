// Shared helpers of the `mlcapsule` command: loading a model (.onnx compiled on the fly, or a
// compiled .plan), reading and writing tensors (.pb TensorProto or .npy), parsing shapes.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "compiler/compiler.h"
#include "engine/plan.h"
#include "engine/tensor.h"

namespace mlcapsule::cli {

inline constexpr const char* kVersion = "0.1.0";
inline constexpr uint64_t kMaxTensorFileBytes = uint64_t{4} << 30;

// Exit codes (docs/cli.md): 0 success, 1 failure of the operation (a conformance failure, a model
// error), 2 usage error, 3 unsupported model or input.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnsupported = 3;

int ExitCodeFor(const Status& status);
// The exit status the chosen subcommand set (its callback cannot return one through CLI11).
void SetExitCode(int code);
int ExitCode();
// Prints "mlcapsule: error: ..." to stderr and returns the exit code for it.
int ReportError(const Status& status);

Result<std::vector<int64_t>> ParseDims(const std::string& text);
bool EndsWith(const std::string& s, const std::string& suffix);

// Loads MODEL: a .plan file, or an .onnx file compiled with `options`.
Result<engine::Plan> LoadModel(const std::string& path, const compiler::CompileOptions& options,
                               compiler::CompileReport* report = nullptr);

Result<engine::Tensor> ReadTensorFile(const std::string& path);
// Prints "NAME: dtype[dims] [v0, v1, ...]" (the first ten values) to stdout.
void PrintTensorPreview(const std::string& name, const engine::Tensor& tensor);
Status WriteTensorFile(const std::string& path, const engine::Tensor& tensor,
                       const std::string& name);

void AddConformanceCommand(CLI::App& app);
void AddBenchCommand(CLI::App& app);
void AddModelCommands(CLI::App& app);  // compile, infer
// keygen, pack, inspect, verify, lease {request,issue,install,status}, usage, run
void AddCapsuleCommands(CLI::App& app);
void AddServeCommand(CLI::App& app);  // serve (loopback HTTP endpoint)

}  // namespace mlcapsule::cli
