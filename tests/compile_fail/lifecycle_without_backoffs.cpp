// expect-error: Lifecycle policy is missing: std::vector<backoff_status> backoffs\(\) const
// The documented skeleton with one member left out (OMIT_LIFECYCLE_BACKOFFS).

#define OMIT_LIFECYCLE_BACKOFFS
#include "skeletons.hpp"
