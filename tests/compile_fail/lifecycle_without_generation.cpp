// expect-error: Lifecycle policy is missing: std::uint64_t generation\(\) const
// The documented skeleton with one member left out (OMIT_LIFECYCLE_GENERATION).

#define OMIT_LIFECYCLE_GENERATION
#include "skeletons.hpp"
