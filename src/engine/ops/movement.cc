// Placeholder: the Movement family registers its ops here.
#include "engine/op.h"

namespace mlcapsule::engine {
void AddMovementOps(std::vector<const OpSchema*>* ops) {}
}  // namespace mlcapsule::engine
