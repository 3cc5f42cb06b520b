// Placeholder: the Conv family registers its ops here.
#include "engine/op.h"

namespace mlcapsule::engine {
void AddConvOps(std::vector<const OpSchema*>* ops) {}
}  // namespace mlcapsule::engine
