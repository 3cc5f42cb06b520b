// The operator allow-list: every op the engine runs is listed here, through its family's
// registration function. An op not found here is rejected at compile and at plan load time.
#include <array>
#include <vector>

#include "engine/op.h"

namespace mlcapsule::engine {

// Each family file under ops/ appends its schemas.
void AddElementwiseOps(std::vector<const OpSchema*>* ops);  // ops/elementwise*.cc
void AddReductionOps(std::vector<const OpSchema*>* ops);    // ops/reduce*.cc, softmax
void AddMovementOps(std::vector<const OpSchema*>* ops);     // ops/movement*.cc: shape/data movement
void AddConvOps(std::vector<const OpSchema*>* ops);         // ops/conv.cc
void AddGemmOps(std::vector<const OpSchema*>* ops);         // ops/gemm.cc
void AddPoolOps(std::vector<const OpSchema*>* ops);         // ops/pool.cc
void AddNormOps(std::vector<const OpSchema*>* ops);         // ops/norm.cc

namespace {

struct Table {
  std::array<const OpSchema*, 65536> by_code{};
  Table() {
    std::vector<const OpSchema*> ops;
    AddElementwiseOps(&ops);
    AddReductionOps(&ops);
    AddMovementOps(&ops);
    AddConvOps(&ops);
    AddGemmOps(&ops);
    AddPoolOps(&ops);
    AddNormOps(&ops);
    for (const OpSchema* s : ops) {
      if (by_code[static_cast<uint16_t>(s->type)] != nullptr) std::abort();  // listed twice
      by_code[static_cast<uint16_t>(s->type)] = s;
    }
  }
};

}  // namespace

const OpSchema* FindSchema(OpType type) {
  static const Table* table = new Table();
  return table->by_code[static_cast<uint16_t>(type)];
}

}  // namespace mlcapsule::engine
