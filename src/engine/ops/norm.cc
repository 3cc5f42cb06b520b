// Placeholder: the Norm family registers its ops here.
#include "engine/op.h"

namespace mlcapsule::engine {
void AddNormOps(std::vector<const OpSchema*>* ops) {}
}  // namespace mlcapsule::engine
