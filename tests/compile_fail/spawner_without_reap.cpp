// expect-error: Spawner policy is missing: void reap\(
// The documented skeleton with one member left out (OMIT_SPAWNER_REAP).

#define OMIT_SPAWNER_REAP
#include "skeletons.hpp"
