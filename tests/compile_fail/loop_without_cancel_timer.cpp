// expect-error: Loop policy is missing: void cancel_timer\(timer_id\)
// The documented skeleton with one member left out (OMIT_LOOP_CANCEL_TIMER).

#define OMIT_LOOP_CANCEL_TIMER
#include "skeletons.hpp"
