// The separately compiled part of procmodel (the procmodel::compiled target):
// the master's code and the worker runtime, compiled once.
#include <procmodel/src.hpp>
