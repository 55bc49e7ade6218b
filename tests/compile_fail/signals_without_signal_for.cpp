// expect-error: Signals policy is missing: static int signal_for\(command c\)
// The documented skeleton with one member left out (OMIT_SIGNALS_SIGNAL_FOR).

#define OMIT_SIGNALS_SIGNAL_FOR
#include "skeletons.hpp"
