// `mlcapsule-lab steal`: a licensed customer stealing a capsule's model through the real client
// path. It attaches to an existing capsule with its own client state and license token (the
// lease comes from the license server over HTTPS), spends a query budget with one of the lab's
// extraction attacks, syncs its usage as an honest client must (which is how PRADA's alarm and
// the escrowed watermark samples reach the provider), then trains two thieves on the transcript:
// one that memorises its answers (MLP, 300 epochs) and one that generalises (CNN-B, 40 epochs),
// and exports both as ONNX. Trusts nothing it reads: the capsule, the server and the data files
// are checked by the code that reads them.
//
//   lab::StealOptions s{.capsule_path = "victim.capsule", .state_dir = "state", ...};
//   MLC_ASSIGN_OR_RETURN(std::string summary, lab::Steal(s));  // OUT/steal.json, one line
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "lab/data.h"

namespace mlcapsule::lab {

struct StealOptions {
  std::string capsule_path;
  std::string state_dir;        // the thief's client state (created when missing)
  std::string server_url;       // https://127.0.0.1:PORT
  std::string ca_cert;          // PEM that verifies the server ("" = the system's)
  std::string license_file;     // the customer's license token
  std::string out_dir;          // steal.json, the two ONNX files, reports/
  std::string attack = "jbda";  // jbda or random (both draw from the lab's attacker pool)
  int64_t budget = 2000;
  int64_t sync_every = 500;
  uint64_t seed = 1;
  std::string data_dir = kFashionMnistDir;
  int progress_fd = -1;     // >= 0: JSON progress events, one per line, to this descriptor
  std::string core_binary;  // "" = mlcapsule-core beside this executable
  bool quiet = false;       // no human progress on stderr
};

// Runs the theft; writes OUT/steal.json and returns its content as one line of JSON.
Result<std::string> Steal(const StealOptions& options);

}  // namespace mlcapsule::lab
