// Placeholder: the Pool family registers its ops here.
#include "engine/op.h"

namespace mlcapsule::engine {
void AddPoolOps(std::vector<const OpSchema*>* ops) {}
}  // namespace mlcapsule::engine
