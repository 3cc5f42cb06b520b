// Placeholder: the Reduction family registers its ops here.
#include "engine/op.h"

namespace mlcapsule::engine {
void AddReductionOps(std::vector<const OpSchema*>* ops) {}
}  // namespace mlcapsule::engine
