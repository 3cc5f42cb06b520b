// Placeholder: the Gemm family registers its ops here.
#include "engine/op.h"

namespace mlcapsule::engine {
void AddGemmOps(std::vector<const OpSchema*>* ops) {}
}  // namespace mlcapsule::engine
